//! AWS Signature Version 4 for S3 requests: the few lines the protocol
//! needs (HMAC-SHA256 over a canonical request), on the SHA-256 the crate
//! has already, rather than the `aws-sigv4` crate and the AWS SDK's types
//! it brings. Payloads are sent as `UNSIGNED-PAYLOAD`, which S3 accepts
//! on every request: a ware is verified by its own hash on every read.
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html>

use sha2::{Digest as _, Sha256};

use super::settings::Credentials;
use crate::formula::Digest;

pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What is signed of one request.
pub struct Request<'a> {
    pub method: &'a str,
    /// `host` or `host:port`, exactly as the Host header carries it.
    pub host: &'a str,
    /// The path, already URI-encoded (`encode_path`).
    pub path: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
    pub region: &'a str,
    pub payload_hash: &'a str,
}

/// The headers to add to the request: `x-amz-date`,
/// `x-amz-content-sha256`, `x-amz-security-token` (with a session token)
/// and `authorization`.
pub fn sign(req: &Request<'_>, creds: &Credentials, service: &str) -> Vec<(&'static str, String)> {
    let mut headers: Vec<(&'static str, String)> = vec![
        ("host", req.host.to_string()),
        ("x-amz-content-sha256", req.payload_hash.to_string()),
        ("x-amz-date", req.amz_date.to_string()),
    ];
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token", token.clone()));
    }
    // Sorted by name (they are, as written above).
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
    let signed_headers = headers.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let canonical =
        format!("{}\n{}\n\n{canonical_headers}\n{signed_headers}\n{}", req.method, req.path, req.payload_hash);
    let date = &req.amz_date[..8.min(req.amz_date.len())];
    let scope = format!("{date}/{}/{service}/aws4_request", req.region);
    let to_sign = format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", req.amz_date, sha256_hex(canonical.as_bytes()));
    let mut key = hmac(format!("AWS4{}", creds.secret_access_key).as_bytes(), date.as_bytes());
    for part in [req.region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = Digest(hmac(&key, to_sign.as_bytes()));
    headers.remove(0);
    headers.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    headers
}

/// A path with every byte but S3's unreserved ones and `/` percent-encoded
/// (SigV4's canonical URI for S3, which is encoded once).
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch.
pub fn amz_date(secs: i64) -> String {
    crate::civil_time::format_utc(secs).replace(['-', ':'], "")
}

fn sha256_hex(data: &[u8]) -> String {
    Digest(Sha256::digest(data).into()).to_string()
}

/// HMAC-SHA256 (RFC 2104): keys are at most 64 bytes here (an AWS secret
/// plus 4, or a previous HMAC), so none needs hashing first; a longer one
/// is hashed as the RFC says anyway.
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = Digest(hmac(b"Jefe", b"what do ya want for nothing?")).to_string();
        assert_eq!(mac, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    /// AWS's example credentials and bucket, signed by botocore
    /// (`S3SigV4Auth`), an implementation independent of this one.
    #[test]
    fn the_signature_is_botocores_for_the_same_request() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let empty = sha256_hex(b"");
        let req = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            amz_date: "20261202T021808Z",
            region: "us-east-1",
            payload_hash: &empty,
        };
        let headers = sign(&req, &creds, "s3");
        let auth = &headers.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261202/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=bdc4bb9e8d8bd0cc93740f12ad5805a04c3260059d380ccae86decd6ec2c7ea5"
        );
        assert_eq!(amz_date(1369353600), "20130524T000000Z");
        assert_eq!(encode_path("/b/a b+c/tar/x.tar"), "/b/a%20b%2Bc/tar/x.tar");
    }
}
