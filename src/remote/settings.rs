//! Where wares are looked for and saved when no flag says, where
//! downloads land, and how S3 is reached: the config's `[warehouse]` and
//! `[warehouse.s3]` (read by `crate::config`), with the usual `AWS_*`
//! variables taking precedence over the file, as the AWS tools do.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::RemoteError;

/// Where downloaded wares land unless `warehouse.download_dir` says: a
/// cache that survives reboots (unlike the state dir, a tmpfs).
pub const DEFAULT_DOWNLOAD_DIR: &str = "/var/cache/repeatr/downloads";

/// S3's default region, as the AWS tools assume it.
pub const DEFAULT_REGION: &str = "us-east-1";

/// `[warehouse]` as written; every key optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// The warehouses searched in order when no `--warehouse` is given.
    #[serde(default)]
    pub fetch: Vec<String>,
    /// Where outputs and packs go when no `--save-to` is given (default:
    /// the first of `fetch`).
    pub save: Option<String>,
    pub download_dir: Option<PathBuf>,
    #[serde(default)]
    pub s3: S3Config,
}

/// `[warehouse.s3]`, each key overridden by its `AWS_*` variable.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// How S3 requests are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or `endpoint`, without a
    /// trailing `/`: requests go to `ENDPOINT/BUCKET/KEY` (path style, which
    /// every S3-compatible server takes). Without one, AWS itself at
    /// `https://BUCKET.s3.REGION.amazonaws.com/KEY`.
    pub endpoint: Option<String>,
    pub region: String,
    /// None: unsigned requests, for a public bucket.
    pub credentials: Option<Credentials>,
}

impl S3Settings {
    /// The settings from `config` and the environment as `var` reads it.
    pub fn resolve(config: &S3Config, var: &dyn Fn(&str) -> Option<String>) -> Result<S3Settings, RemoteError> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let endpoint = var("AWS_ENDPOINT_URL_S3")
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| config.endpoint.clone())
            .map(|e| e.trim_end_matches('/').to_string());
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(RemoteError::Settings {
                problem: format!("the S3 endpoint {e:?} is not an http:// or https:// URL"),
            });
        }
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| config.region.clone())
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        // The environment's keys come as a set: a file's secret must never
        // pair with another account's key id.
        let (id, secret, token) = match var("AWS_ACCESS_KEY_ID") {
            Some(id) => (Some(id), var("AWS_SECRET_ACCESS_KEY"), var("AWS_SESSION_TOKEN")),
            None => (config.access_key_id.clone(), config.secret_access_key.clone(), config.session_token.clone()),
        };
        let credentials = match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => {
                Some(Credentials { access_key_id, secret_access_key, session_token: token })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(RemoteError::Settings { problem: "an S3 access key id is set without its secret".into() });
            }
            (None, Some(_)) => {
                return Err(RemoteError::Settings { problem: "an S3 secret is set without its access key id".into() });
            }
        };
        Ok(S3Settings { endpoint, region, credentials })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_environment_overrides_the_file_and_keys_come_as_a_set() {
        let file = S3Config {
            endpoint: Some("http://file:1/".into()),
            region: Some("eu-west-1".into()),
            access_key_id: Some("FILEKEY".into()),
            secret_access_key: Some("filesecret".into()),
            session_token: None,
        };
        let s = S3Settings::resolve(&file, &env(&[])).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://file:1"));
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.credentials.unwrap().access_key_id, "FILEKEY");
        let s = S3Settings::resolve(
            &file,
            &env(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
                ("AWS_DEFAULT_REGION", "x-1"),
                ("AWS_ACCESS_KEY_ID", "ENV"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ]),
        )
        .unwrap();
        assert_eq!((s.endpoint.as_deref(), s.region.as_str()), (Some("http://127.0.0.1:9"), "x-1"));
        assert_eq!(s.credentials.unwrap().secret_access_key, "s");
        let e = S3Settings::resolve(&file, &env(&[("AWS_ACCESS_KEY_ID", "ENV")])).unwrap_err();
        assert!(e.to_string().contains("without its secret"), "{e}");
        let s = S3Settings::resolve(&S3Config::default(), &env(&[])).unwrap();
        assert_eq!((s.endpoint, s.region.as_str(), s.credentials), (None, DEFAULT_REGION, None));
    }
}
