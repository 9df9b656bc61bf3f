//! One synchronous HTTP(S) client for every remote warehouse: ureq, with
//! rustls and webpki's roots (no OpenSSL to link into a static binary, no
//! async runtime). Statuses are answers, not errors: 404 means "not
//! here", 401/403 a credentials problem, anything else non-2xx a store
//! problem, each one line naming the URL.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use ureq::http::Response;
use ureq::{Agent, Body};

use super::error::RemoteError;

/// A store that does not answer within this is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to the first byte of a response (a PUT's includes the store
/// writing the object).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Of an error's body, as much as is read for its message.
const ERROR_BODY: u64 = 4096;
/// Waits before the second and third try of a request the store answered
/// with a 5xx or never answered: S3 asks clients to retry those (a busy
/// partition answers 503 SlowDown).
const RETRY_WAITS: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(1000)];

pub struct Client {
    agent: Agent,
}

pub enum Method {
    Get,
    Head,
}

impl Client {
    pub fn new() -> Client {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .user_agent(concat!("repeatr/", env!("CARGO_PKG_VERSION")))
            .build();
        Client { agent: Agent::new_with_config(config) }
    }

    /// GET or HEAD `url`: `None` for 404, the response for 2xx, an error
    /// for anything else. `shown` is the URL messages name.
    pub fn fetch(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        shown: &str,
    ) -> Result<Option<Response<Body>>, RemoteError> {
        retried(|| {
            let result = match method {
                Method::Get => headers.iter().fold(self.agent.get(url), |r, (k, v)| r.header(*k, v)).call(),
                Method::Head => headers.iter().fold(self.agent.head(url), |r, (k, v)| r.header(*k, v)).call(),
            };
            let response = result.map_err(|e| unreachable(url, shown, e))?;
            if response.status().as_u16() == 404 {
                return Ok(None);
            }
            answered(response, shown).map(Some)
        })
    }

    /// PUT the whole of `file` to `url`, with its length.
    pub fn put(&self, url: &str, headers: &[(&str, String)], mut file: &File, shown: &str) -> Result<(), RemoteError> {
        retried(|| {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| RemoteError::Transfer { url: shown.to_string(), why: e.to_string() })?;
            let response = headers
                .iter()
                .fold(self.agent.put(url), |r, (k, v)| r.header(*k, v))
                .send(file)
                .map_err(|e| unreachable(url, shown, e))?;
            answered(response, shown).map(drop)
        })
    }
}

/// `attempt`, tried again after each of `RETRY_WAITS` while it fails in a
/// way a later try may not.
fn retried<T>(mut attempt: impl FnMut() -> Result<T, RemoteError>) -> Result<T, RemoteError> {
    for wait in RETRY_WAITS {
        match attempt() {
            Err(e @ (RemoteError::Unreachable { .. } | RemoteError::Status { status: 500..=599, .. })) => {
                log::info!("{e}: trying again in {wait:?}");
                std::thread::sleep(wait);
            }
            other => return other,
        }
    }
    attempt()
}

/// A request that got no answer; an S3 object's message names the
/// endpoint URL too, which is what could not be reached.
fn unreachable(url: &str, shown: &str, e: ureq::Error) -> RemoteError {
    let why = if url == shown { e.to_string() } else { format!("{url}: {e}") };
    RemoteError::Unreachable { url: shown.to_string(), why }
}

/// The response if it is a 2xx; otherwise its status, with S3's error
/// code and message when the body is S3's XML.
fn answered(mut response: Response<Body>, shown: &str) -> Result<Response<Body>, RemoteError> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let mut text = String::new();
    let _ = response.body_mut().as_reader().take(ERROR_BODY).read_to_string(&mut text);
    let detail = match (tag(&text, "Code"), tag(&text, "Message")) {
        (Some(code), Some(message)) => format!(": {code}: {message}"),
        (Some(code), None) => format!(": {code}"),
        _ => String::new(),
    };
    let url = shown.to_string();
    Err(match status {
        401 | 403 => RemoteError::Denied { url, status, detail },
        _ => RemoteError::Status { url, status, detail },
    })
}

/// The text of the first `<name>...</name>` in `xml`, on one line.
fn tag<'a>(xml: &'a str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let len = xml[start..].find(&format!("</{name}>"))?;
    let text: &'a str = &xml[start..start + len];
    Some(crate::escape::escaped(text.split_whitespace().collect::<Vec<_>>().join(" ").as_bytes()))
}
