//! A remote warehouse's objects: the local layout, `tar/<hash>.tar`, under
//! an HTTP base URL or an S3 key prefix, so a warehouse directory copied
//! to a web server or a bucket (`aws s3 sync DIR s3://B/P`) is one.

use std::fs::File;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use super::client::{Client, Method};
use super::error::RemoteError;
use super::settings::S3Settings;
use super::sigv4;
use crate::formula::WareId;

pub enum Store {
    Http { base: String },
    S3 { bucket: String, prefix: String, settings: S3Settings },
}

/// Where one object is: the URL requested, the Host header signed, the
/// encoded path signed, and the URL messages show.
struct Object {
    url: String,
    host: String,
    path: String,
    shown: String,
}

impl Store {
    fn object(&self, id: &WareId) -> Result<Object, RemoteError> {
        let name = format!("tar/{}.tar", id.hash);
        match self {
            Store::Http { base } => {
                let url = format!("{base}/{name}");
                Ok(Object { url: url.clone(), host: String::new(), path: String::new(), shown: url })
            }
            Store::S3 { bucket, prefix, settings } => {
                let key = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                let shown = format!("s3://{bucket}/{key}");
                let (base, host, path) = match &settings.endpoint {
                    Some(endpoint) => {
                        let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
                        let (host, base_path) = rest.split_once('/').unwrap_or((rest, ""));
                        let mut path = String::new();
                        if !base_path.is_empty() {
                            path.push('/');
                            path.push_str(base_path);
                        }
                        path.push_str(&format!("/{bucket}/{key}"));
                        (format!("{scheme}://{host}"), host.to_string(), path)
                    }
                    None => {
                        let host = format!("{bucket}.s3.{}.amazonaws.com", settings.region);
                        (format!("https://{host}"), host, format!("/{key}"))
                    }
                };
                let path = sigv4::encode_path(&path);
                if host.is_empty() {
                    return Err(RemoteError::Settings { problem: "the S3 endpoint has no host".into() });
                }
                Ok(Object { url: format!("{base}{path}"), host, path, shown })
            }
        }
    }

    /// The URL messages name for the ware `id` here.
    pub fn shown(&self, id: &WareId) -> String {
        self.object(id).map(|o| o.shown).unwrap_or_default()
    }

    fn headers(&self, method: &str, object: &Object) -> Vec<(&'static str, String)> {
        match self {
            Store::Http { .. } => Vec::new(),
            Store::S3 { settings, .. } => {
                let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let amz_date = sigv4::amz_date(i64::try_from(secs).unwrap_or(0));
                let req = sigv4::Request {
                    method,
                    host: &object.host,
                    path: &object.path,
                    amz_date: &amz_date,
                    region: &settings.region,
                    payload_hash: sigv4::UNSIGNED_PAYLOAD,
                };
                let mut headers = match &settings.credentials {
                    Some(creds) => sigv4::sign(&req, creds, "s3"),
                    None => vec![("x-amz-content-sha256", sigv4::UNSIGNED_PAYLOAD.to_string())],
                };
                headers.push(("host", object.host.clone()));
                headers
            }
        }
    }

    /// The object's body, `None` if the store has no such object; and the
    /// URL messages name.
    pub fn get(&self, client: &Client, id: &WareId) -> Result<(Option<impl Read + use<>>, String), RemoteError> {
        let object = self.object(id)?;
        let headers = self.headers("GET", &object);
        let response = client.fetch(Method::Get, &object.url, &headers, &object.shown)?;
        Ok((response.map(|r| r.into_body().into_reader()), object.shown))
    }

    pub fn has(&self, client: &Client, id: &WareId) -> Result<bool, RemoteError> {
        let object = self.object(id)?;
        let headers = self.headers("HEAD", &object);
        Ok(client.fetch(Method::Head, &object.url, &headers, &object.shown)?.is_some())
    }

    /// Stores `file` as the ware `id` (HTTP warehouses are read only).
    pub fn put(&self, client: &Client, id: &WareId, file: &File) -> Result<(), RemoteError> {
        let object = self.object(id)?;
        if let Store::Http { base } = self {
            return Err(RemoteError::ReadOnly { url: base.clone() });
        }
        let mut headers = self.headers("PUT", &object);
        headers.push(("content-type", "application/x-tar".into()));
        client.put(&object.url, &headers, file, &object.shown)
    }
}
