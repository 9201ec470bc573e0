//! AWS Signature Version 4 verification for the management API.
//!
//! The AWS CLI and SDKs sign `@connections` calls for the service `execute-api`. Verifying
//! means rebuilding the canonical request exactly as the signer did and comparing signatures:
//! - the canonical URI is the path *as sent*, percent-encoded once more (API Gateway is not S3,
//!   so signers double-encode: `/dev/@connections/Tq3mxb7WNjMCFhA%3D` is signed as
//!   `/dev/%40connections/Tq3mxb7WNjMCFhA%253D`);
//! - the query is sorted and encoded with the strict SigV4 set;
//! - the signed headers are lower-cased, trimmed, their inner spaces folded;
//! - the payload hash is `x-amz-content-sha256` when sent, else the SHA-256 of the body.
//!
//! Any region is accepted; the clock may be off by at most [`MAX_SKEW_SECS`].

use chrono::{NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `x-amz-date` may be from the server's clock.
pub(crate) const MAX_SKEW_SECS: i64 = 300;

/// The service name management calls are signed for.
pub(crate) const SERVICE: &str = "execute-api";

/// An access key pair that may call the management API.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// The secret (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Why a request's signature was refused; the message is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    /// No `Authorization` header.
    #[error("missing Authentication Token: sign the request with AWS Signature Version 4")]
    Missing,
    /// The header is not a SigV4 header.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// The access key is not configured.
    #[error("the security token included in the request is invalid")]
    UnknownKey,
    /// The credential scope is not for `execute-api` or its date does not match.
    #[error("credential should be scoped to a valid region and the service 'execute-api'")]
    BadScope,
    /// The request time is too far from the server's clock.
    #[error("signature expired: the request time is more than 5 minutes from the server's")]
    Expired,
    /// The signature does not match.
    #[error(
        "the request signature we calculated does not match the signature you provided; check your AWS Secret Access Key and signing method"
    )]
    Mismatch,
}

/// The parts of a request a signature covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded).
    pub raw_path: &'a str,
    /// The query exactly as sent, without `?`.
    pub raw_query: Option<&'a str>,
    /// Every header (name, value), names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SignatureError> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256")
        .ok_or(SignatureError::Malformed(
            "only AWS4-HMAC-SHA256 is supported",
        ))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or(SignatureError::Malformed("no Credential"))?;
    let signed = signed.ok_or(SignatureError::Malformed("no SignedHeaders"))?;
    let signature = signature.ok_or(SignatureError::Malformed("no Signature"))?;
    let mut scope = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(SignatureError::Malformed(
            "Credential is not key/date/region/service/aws4_request",
        ));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        terminator,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// Everything but unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `STRICT`, keeping `/`.
const PATH: &AsciiSet = &STRICT.remove(b'/');

/// The canonical URI: the wire path with dot segments removed, encoded once more.
fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw_path.split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let normalized = format!("/{}", segments.join("/"));
    utf8_percent_encode(&normalized, PATH).to_string()
}

fn canonical_query(raw_query: Option<&str>) -> String {
    let Some(query) = raw_query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (
                utf8_percent_encode(&decode(k), STRICT).to_string(),
                utf8_percent_encode(&decode(v), STRICT).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn fold_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Verifies SigV4 signatures against a set of configured credentials.
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    credentials: Vec<Credential>,
    service: &'static str,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(Vec::new())
    }
}

impl Verifier {
    /// A verifier accepting these key pairs, for calls signed for `execute-api`.
    pub(crate) fn new(credentials: Vec<Credential>) -> Self {
        Verifier::for_service(credentials, SERVICE)
    }

    /// A verifier accepting these key pairs, for calls signed for `service` (`dynamodb`).
    pub(crate) fn for_service(credentials: Vec<Credential>, service: &'static str) -> Self {
        Verifier {
            credentials,
            service,
        }
    }

    /// Whether any credentials are configured (if none, the caller decides who may call).
    pub(crate) fn is_enabled(&self) -> bool {
        !self.credentials.is_empty()
    }

    /// Verifies an HTTP request (its head and whole body) signed at most [`MAX_SKEW_SECS`]
    /// from now.
    pub(crate) fn verify_http(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let request = SignedRequest {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query(),
            headers: &headers,
            body,
        };
        self.verify(&request, crate::time::now_ms())
    }

    /// Verifies a request signed at most [`MAX_SKEW_SECS`] from `now_ms`.
    pub(crate) fn verify(
        &self,
        request: &SignedRequest<'_>,
        now_ms: i64,
    ) -> Result<(), SignatureError> {
        let header = request
            .header("authorization")
            .ok_or(SignatureError::Missing)?;
        let auth = parse_authorization(header)?;
        let credential = self
            .credentials
            .iter()
            .find(|c| c.access_key_id == auth.access_key_id)
            .ok_or(SignatureError::UnknownKey)?;
        let amz_date = request
            .header("x-amz-date")
            .ok_or(SignatureError::Malformed("no X-Amz-Date header"))?;
        if auth.service != self.service
            || auth.terminator != "aws4_request"
            || auth.region.is_empty()
            || !amz_date.starts_with(auth.date)
        {
            return Err(SignatureError::BadScope);
        }
        let signed_at = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
            .map_err(|_| SignatureError::Malformed("X-Amz-Date is not YYYYMMDD'T'HHMMSS'Z'"))?;
        let signed_at_ms = Utc.from_utc_datetime(&signed_at).timestamp_millis();
        if (now_ms - signed_at_ms).abs() > MAX_SKEW_SECS * 1000 {
            return Err(SignatureError::Expired);
        }
        if !auth.signed_headers.contains(&"host") {
            return Err(SignatureError::Malformed("the host header must be signed"));
        }
        let string_to_sign = string_to_sign(request, &auth, amz_date)?;
        let provided = hex::decode(auth.signature).map_err(|_| SignatureError::Mismatch)?;
        let mut mac =
            HmacSha256::new_from_slice(&signing_key(&credential.secret_access_key, &auth))
                .expect("HMAC takes keys of any size");
        mac.update(string_to_sign.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&provided)
            .map_err(|_| SignatureError::Mismatch)
    }
}

fn signing_key(secret: &str, auth: &Authorization<'_>) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// The string the signer signed: the hashed canonical request with the date and scope.
fn string_to_sign(
    request: &SignedRequest<'_>,
    auth: &Authorization<'_>,
    amz_date: &str,
) -> Result<String, SignatureError> {
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = request
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| fold_spaces(v))
            .collect();
        if values.is_empty() {
            return Err(SignatureError::Malformed("a signed header is missing"));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload_hash = match request.header("x-amz-content-sha256") {
        Some(hash) => hash.to_owned(),
        None => sha256_hex(request.body),
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.raw_path),
        canonical_query(request.raw_query),
        canonical_headers,
        auth.signed_headers.join(";"),
        payload_hash
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    Ok(format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_get_vanilla_test_vector() {
        // From AWS's Signature Version 4 test suite: `get-vanilla`.
        let h = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=x",
        )
        .unwrap();
        let sts = string_to_sign(&request(&h, "/"), &auth, "20150830T123600Z").unwrap();
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &auth);
        assert_eq!(
            hex::encode(hmac(&key, sts.as_bytes())),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// A request signed with the test suite's example key for `execute-api`.
    fn signed_get(signature: &str, date: &str) -> (Vec<(String, String)>, Verifier) {
        let headers = vec![
            ("Host".to_owned(), "example.amazonaws.com".to_owned()),
            ("X-Amz-Date".to_owned(), date.to_owned()),
            (
                "Authorization".to_owned(),
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
                ),
            ),
        ];
        let verifier = Verifier::new(vec![Credential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }]);
        (headers, verifier)
    }

    fn sign(secret: &str, method: &str, path: &str, date: &str, body: &[u8]) -> String {
        let canonical = format!(
            "{method}\n{}\n\nhost:example.amazonaws.com\nx-amz-date:{date}\n\nhost;x-amz-date\n{}",
            canonical_uri(path),
            sha256_hex(body)
        );
        let day = &date[..8];
        let sts = format!(
            "AWS4-HMAC-SHA256\n{date}\n{day}/us-east-1/execute-api/aws4_request\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let k = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
        let k = hmac(&k, b"us-east-1");
        let k = hmac(&k, b"execute-api");
        let k = hmac(&k, b"aws4_request");
        hex::encode(hmac(&k, sts.as_bytes()))
    }

    const NOW: i64 = 1440938160000; // 2015-08-30T12:36:00Z

    fn request<'a>(headers: &'a [(&'a str, &'a str)], path: &'a str) -> SignedRequest<'a> {
        SignedRequest {
            method: "GET",
            raw_path: path,
            raw_query: None,
            headers,
            body: b"",
        }
    }

    #[test]
    fn the_canonical_uri_is_double_encoded() {
        assert_eq!(
            canonical_uri("/prod/@connections/Tq3mxb7WNjMCFhA%3D"),
            "/prod/%40connections/Tq3mxb7WNjMCFhA%253D"
        );
        assert_eq!(canonical_uri("/a/./b/../c"), "/a/c");
        assert_eq!(canonical_query(Some("b=2&a=1&a=0")), "a=0&a=1&b=2");
    }

    #[test]
    fn a_correct_signature_verifies_and_anything_else_does_not() {
        let date = "20150830T123600Z";
        let path = "/dev/@connections/Tq3mxb7WNjMCFhA%3D";
        let good = sign(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "GET",
            path,
            date,
            b"",
        );
        let (headers, verifier) = signed_get(&good, date);
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(verifier.verify(&request(&h, path), NOW), Ok(()));
        // Another path, another method, a wrong key, a stale clock.
        assert_eq!(
            verifier.verify(&request(&h, "/dev/@connections/AAAAAAAAAAAAAAA%3D"), NOW),
            Err(SignatureError::Mismatch)
        );
        let mut post = request(&h, path);
        post.method = "POST";
        assert_eq!(verifier.verify(&post, NOW), Err(SignatureError::Mismatch));
        assert_eq!(
            verifier.verify(&request(&h, path), NOW + 301_000),
            Err(SignatureError::Expired)
        );
        let bad = sign("wrong-secret", "GET", path, date, b"");
        let (headers, verifier) = signed_get(&bad, date);
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            verifier.verify(&request(&h, path), NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_or_foreign_authorization_is_refused() {
        let verifier = Verifier::new(vec![Credential {
            access_key_id: "AKID".into(),
            secret_access_key: "s".into(),
        }]);
        assert_eq!(
            verifier.verify(&request(&[], "/"), NOW),
            Err(SignatureError::Missing)
        );
        let h = [("authorization", "Basic dXNlcjpwYXNz")];
        assert!(matches!(
            verifier.verify(&request(&h, "/"), NOW),
            Err(SignatureError::Malformed(_))
        ));
        let h = [
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=OTHER/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00",
            ),
            ("x-amz-date", "20150830T123600Z"),
        ];
        assert_eq!(
            verifier.verify(&request(&h, "/"), NOW),
            Err(SignatureError::UnknownKey)
        );
        let h = [
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            ),
            ("x-amz-date", "20150830T123600Z"),
        ];
        assert_eq!(
            verifier.verify(&request(&h, "/"), NOW),
            Err(SignatureError::BadScope)
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Credential {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
