//! The built-in JWT authorizer: verifies a token's signature and standard claims.
//!
//! HS256 with a shared secret, RS256 and ES256 with a PEM public key or a JWKS file (the key
//! is chosen by the token's `kid`, or is the only key of the set). `exp` is required and checked,
//! `nbf` is checked when present, `iss` and `aud` when configured (and then required). The
//! principal is `sub`; every claim goes into the authorizer context as a string.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The algorithms the JWT authorizer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(a: JwtAlgorithm) -> Self {
        match a {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        }
    }
}

/// Where the verification key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// A shared secret (HS256).
    Secret(&'a str),
    /// A PEM file with a public key (RS256, ES256).
    PemFile(&'a Path),
    /// A JWKS file (`{"keys": [...]}`).
    JwksFile(&'a Path),
}

/// A configured verifier.
pub struct JwtVerifier {
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// What the verifier needs besides the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims<'a> {
    /// Accepted issuers; empty: `iss` is not checked.
    pub issuers: &'a [String],
    /// Accepted audiences; empty: `aud` is not checked.
    pub audiences: &'a [String],
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl JwtVerifier {
    /// A verifier for `algorithm` with the key from `source`. Errors say what is wrong with the
    /// key, for the start-up error.
    pub fn new(
        algorithm: JwtAlgorithm,
        source: KeySource<'_>,
        claims: Claims<'_>,
    ) -> Result<Self, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let keys = match (algorithm, source) {
            (JwtAlgorithm::HS256, KeySource::Secret(secret)) => {
                vec![(None, DecodingKey::from_secret(secret.as_bytes()))]
            }
            (JwtAlgorithm::HS256, _) => return Err("HS256 needs `secret`".into()),
            (_, KeySource::Secret(_)) => {
                return Err("`secret` is for HS256; RS256 and ES256 need a public key".into());
            }
            (alg, KeySource::PemFile(path)) => {
                let pem = read(path)?;
                let key = match alg {
                    JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                    _ => DecodingKey::from_ec_pem(&pem),
                }
                .map_err(|e| format!("{} is not a {alg:?} public key: {e}", path.display()))?;
                vec![(None, key)]
            }
            (_, KeySource::JwksFile(path)) => {
                let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&read(path)?)
                    .map_err(|e| format!("{} is not a JWKS file: {e}", path.display()))?;
                let mut keys = Vec::with_capacity(set.keys.len());
                for jwk in &set.keys {
                    let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                        format!(
                            "{}: key {:?} is not usable: {e}",
                            path.display(),
                            jwk.common.key_id
                        )
                    })?;
                    keys.push((jwk.common.key_id.clone(), key));
                }
                if keys.is_empty() {
                    return Err(format!("{} has no keys", path.display()));
                }
                keys
            }
        };
        let mut validation = Validation::new(algorithm.into());
        validation.leeway = claims.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if claims.issuers.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(claims.issuers);
            required.push("iss");
        }
        if claims.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(claims.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier { keys, validation })
    }

    /// Verifies `token` (a `Bearer ` prefix is ignored). Returns the principal (`sub`) and the
    /// claims as strings, or why the token is refused.
    pub fn verify(&self, token: &str) -> Result<(String, Vec<(String, String)>), String> {
        let token = token.trim();
        let token = match token.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => token[7..].trim_start(),
            _ => token,
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("bad token: {e}"))?;
        let key = match (&header.kid, self.keys.as_slice()) {
            (_, [(None, key)]) => key,
            (Some(kid), keys) => keys
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid))
                .map(|(_, key)| key)
                .ok_or_else(|| format!("no key with kid {kid:?}"))?,
            (None, [(_, key)]) => key,
            (None, _) => return Err("the token has no kid and the key set has several keys".into()),
        };
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &self.validation)
                .map_err(|e| format!("token refused: {e}"))?;
        let claims = data.claims;
        let principal = claims.get("sub").map(stringify).unwrap_or_default();
        let context = claims
            .iter()
            .map(|(k, v)| (k.clone(), stringify(v)))
            .collect();
        Ok((principal, context))
    }
}

/// A claim as a context value: strings as they are, anything else as JSON text.
fn stringify(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn token(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> i64 {
        crate::time::now_ms() / 1000
    }

    #[test]
    fn hs256_claims_and_failures() {
        let aud = vec!["chat".to_owned()];
        let iss = vec!["https://issuer.example".to_owned()];
        let v = JwtVerifier::new(
            JwtAlgorithm::HS256,
            KeySource::Secret("s3cret"),
            Claims {
                issuers: &iss,
                audiences: &aud,
                leeway_secs: 0,
            },
        )
        .unwrap();
        let good = json!({"sub": "alice", "exp": now() + 60, "aud": "chat",
            "iss": "https://issuer.example", "admin": true, "n": 3});
        let (principal, context) = v
            .verify(&format!("Bearer {}", token(good.clone(), "s3cret")))
            .unwrap();
        assert_eq!(principal, "alice");
        assert!(context.contains(&("admin".into(), "true".into())));
        assert!(context.contains(&("n".into(), "3".into())));

        let mut expired = good.clone();
        expired["exp"] = json!(now() - 3600);
        assert!(
            v.verify(&token(expired, "s3cret"))
                .unwrap_err()
                .contains("Expired")
        );
        let mut early = good.clone();
        early["nbf"] = json!(now() + 3600);
        assert!(v.verify(&token(early, "s3cret")).is_err());
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        assert!(
            v.verify(&token(wrong_aud, "s3cret"))
                .unwrap_err()
                .contains("Audience")
        );
        let mut no_aud = good.clone();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert!(v.verify(&token(no_aud, "s3cret")).is_err());
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("https://evil.example");
        assert!(v.verify(&token(wrong_iss, "s3cret")).is_err());
        assert!(
            v.verify(&token(good, "other"))
                .unwrap_err()
                .contains("Signature")
        );
        assert!(v.verify("not-a-token").is_err());
    }

    #[test]
    fn key_sources_must_fit_the_algorithm() {
        let c = Claims::default();
        assert!(
            JwtVerifier::new(
                JwtAlgorithm::HS256,
                KeySource::PemFile(Path::new("x")),
                c.clone()
            )
            .is_err()
        );
        assert!(JwtVerifier::new(JwtAlgorithm::RS256, KeySource::Secret("x"), c.clone()).is_err());
        let e = JwtVerifier::new(
            JwtAlgorithm::ES256,
            KeySource::PemFile(Path::new("/nonexistent.pem")),
            c,
        )
        .unwrap_err();
        assert!(e.contains("cannot read /nonexistent.pem"), "{e}");
    }
}
