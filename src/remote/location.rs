//! What a `--warehouse` value names: a local directory (a path or
//! `file:///DIR`), an HTTP(S) base URL, or an S3 bucket and key prefix.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::RemoteError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `http://` or `https://`, without a trailing `/`: read only.
    Http(String),
    /// `s3://BUCKET/PREFIX`; `prefix` has no leading or trailing `/`.
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl Location {
    /// Reads a `--warehouse` value. Anything with `://` is a URL (which
    /// must be UTF-8); anything else is a local path.
    pub fn parse(value: &Path) -> Result<Location, RemoteError> {
        let bytes = value.as_os_str().as_bytes();
        let Some(at) = bytes.windows(3).position(|w| w == b"://") else {
            if bytes.is_empty() {
                return Err(bad("", "it is empty".into()));
            }
            return Ok(Location::Local(value.to_path_buf()));
        };
        let text = value.to_str().ok_or_else(|| bad(&value.to_string_lossy(), "a URL must be UTF-8".into()))?;
        let (scheme, rest) = (&text[..at], &text[at + 3..]);
        match scheme.to_ascii_lowercase().as_str() {
            "file" => match rest.strip_prefix('/') {
                Some(path) => Ok(Location::Local(Path::new(OsStr::from_bytes(b"/")).join(path))),
                None => Err(bad(text, "a file URL names a local absolute path (file:///DIR), no host".into())),
            },
            "http" | "https" => {
                let host = rest.split('/').next().unwrap_or("");
                if host.is_empty() {
                    return Err(bad(text, "the URL has no host".into()));
                }
                if rest.contains(['?', '#']) {
                    return Err(bad(text, "a warehouse URL takes no query or fragment".into()));
                }
                Ok(Location::Http(text.trim_end_matches('/').to_string()))
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                check_bucket(bucket).map_err(|p| bad(text, p))?;
                Ok(Location::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() })
            }
            other => Err(bad(text, format!("the scheme {other:?} is not supported"))),
        }
    }

    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }
}

fn bad(url: &str, problem: String) -> RemoteError {
    RemoteError::BadUrl { url: url.to_string(), problem }
}

/// S3's bucket naming rules, so a typo is refused before any request
/// (and a bucket name is safe to put into a host name or a path).
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if ok { Ok(()) } else { Err(format!("{bucket:?} is not an S3 bucket name (3-63 of a-z, 0-9, '-' and '.')")) }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(dir) => write!(f, "{}", dir.display()),
            Location::Http(base) => f.write_str(base),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Location, String> {
        Location::parse(Path::new(s)).map_err(|e| e.to_string())
    }

    #[test]
    fn each_scheme_is_read() {
        assert_eq!(parse("./wares").unwrap(), Location::Local("./wares".into()));
        assert_eq!(parse("file:///srv/wares").unwrap(), Location::Local("/srv/wares".into()));
        assert_eq!(parse("https://h:8/w/").unwrap(), Location::Http("https://h:8/w".into()));
        assert_eq!(parse("s3://my-bucket").unwrap(), Location::S3 { bucket: "my-bucket".into(), prefix: "".into() });
        assert_eq!(parse("s3://b.x/a/b/").unwrap(), Location::S3 { bucket: "b.x".into(), prefix: "a/b".into() });
    }

    #[test]
    fn bad_urls_are_refused_naming_the_url() {
        for (url, says) in [
            ("gs://b/p", "scheme \"gs\""),
            ("file://host/x", "no host"),
            ("s3://B/x", "bucket name"),
            ("s3://", "bucket name"),
            ("http:///x", "no host"),
            ("http://h/x?y", "no query"),
            ("", "empty"),
        ] {
            let e = parse(url).unwrap_err();
            assert!(e.contains(says) && e.contains(&format!("{url:?}")), "{url}: {e}");
        }
    }
}
