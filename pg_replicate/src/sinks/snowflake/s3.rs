//! Uploads to stages Snowflake keeps on AWS S3: a `PUT` of the object
//! signed with AWS Signature Version 4, with the temporary credentials
//! Snowflake's `PUT` answer carries. Pure: the signature and the request's
//! URL and headers; the client sends it.

use ring::{digest, hmac};

/// Temporary credentials of a stage, as a `PUT` answer's `stageInfo.creds`
/// gives them. `Debug` never shows the secret or the token.
#[derive(Clone)]
pub struct S3Credentials {
    /// `AWS_KEY_ID`.
    pub key_id: String,
    /// `AWS_SECRET_KEY`.
    pub secret: String,
    /// `AWS_TOKEN`: the session token, when the keys are temporary.
    pub token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A signed S3 `PUT` of one object.
#[derive(Debug)]
pub struct SignedPut {
    /// `https://<host><path>`.
    pub url: String,
    /// The headers to send, `Authorization` included.
    pub headers: Vec<(String, String)>,
}

/// Hex of the SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data.as_bytes()).as_ref().to_vec()
}

/// A path with every byte but the unreserved ones and `/` percent-encoded,
/// as Signature Version 4 wants it for S3.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Authorization` header of an S3 request without query string:
/// `method` on `path` (already encoded) with `headers` (names in any case,
/// `host` among them), a body whose SHA-256 is `payload_sha256`, signed at
/// `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn authorization(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    payload_sha256: &str,
    credentials: &S3Credentials,
    region: &str,
    amz_date: &str,
) -> String {
    let mut canonical: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    canonical.sort();
    let signed: Vec<&str> = canonical.iter().map(|(name, _)| name.as_str()).collect();
    let signed = signed.join(";");
    let mut request = format!("{method}\n{path}\n\n");
    for (name, value) in &canonical {
        request.push_str(&format!("{name}:{value}\n"));
    }
    request.push_str(&format!("\n{signed}\n{payload_sha256}"));
    let day = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{day}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(request.as_bytes())
    );
    let mut key = hmac_sha256(format!("AWS4{}", credentials.secret).as_bytes(), day);
    for part in [region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part);
    }
    let signature = hex(&hmac_sha256(&key, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed},Signature={signature}",
        credentials.key_id
    )
}

/// The signed `PUT` of `body` (whose SHA-256 is `payload_sha256`) as object
/// `key` of `bucket` in `region`, at `amz_date`; `endpoint` replaces the
/// regional `s3.<region>.amazonaws.com`.
pub fn signed_put(
    bucket: &str,
    key: &str,
    region: &str,
    endpoint: Option<&str>,
    credentials: &S3Credentials,
    payload_sha256: &str,
    amz_date: &str,
) -> SignedPut {
    let host = match endpoint {
        Some(endpoint) => format!("{bucket}.{endpoint}"),
        None => format!("{bucket}.s3.{region}.amazonaws.com"),
    };
    let path = encode_path(&format!("/{key}"));
    let mut headers: Vec<(&str, &str)> = vec![
        ("host", &host),
        ("x-amz-content-sha256", payload_sha256),
        ("x-amz-date", amz_date),
    ];
    if let Some(token) = &credentials.token {
        headers.push(("x-amz-security-token", token));
    }
    let authorization = authorization(
        "PUT",
        &path,
        &headers,
        payload_sha256,
        credentials,
        region,
        amz_date,
    );
    let mut sent: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| *name != "host")
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    sent.push(("authorization".to_owned(), authorization));
    SignedPut {
        url: format!("https://{host}{path}"),
        headers: sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented "PUT Object" example of Signature Version 4 for S3.
    #[test]
    fn the_documented_put_object_example_is_reproduced() {
        let credentials = S3Credentials {
            key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            token: None,
        };
        let payload = sha256_hex(b"Welcome to Amazon S3.");
        assert_eq!(
            payload,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let header = authorization(
            "PUT",
            &encode_path("/test$file.text"),
            &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", &payload),
            ],
            &payload,
            &credentials,
            "us-east-1",
            "20130524T000000Z",
        );
        assert_eq!(
            header,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,\
             Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn a_stage_put_names_bucket_region_key_and_token() {
        let credentials = S3Credentials {
            key_id: "KEY".into(),
            secret: "SECRET".into(),
            token: Some("TOKEN".into()),
        };
        let put = signed_put(
            "sfc-stage",
            "tmp/abc/copy/T/part 1.csv",
            "eu-west-1",
            None,
            &credentials,
            &sha256_hex(b""),
            "20261206T120000Z",
        );
        assert_eq!(
            put.url,
            "https://sfc-stage.s3.eu-west-1.amazonaws.com/tmp/abc/copy/T/part%201.csv"
        );
        let auth = &put.headers.last().unwrap().1;
        assert!(
            auth.contains("/20261206/eu-west-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"),
            "{auth}"
        );
        assert!(put
            .headers
            .iter()
            .any(|(n, v)| n == "x-amz-security-token" && v == "TOKEN"));
        assert!(!format!("{credentials:?}").contains("SECRET"));
    }
}
