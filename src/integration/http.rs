//! HTTP backends: the payload is POSTed as JSON, the response body is the answer.
//!
//! Every backend of a server shares one pooled [`reqwest::Client`]: connections to a backend
//! are kept alive and reused; no call builds a client of its own.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::integration::CallError;

/// Largest answer read from a backend, as Lambda's 6 MB response limit.
pub const MAX_ANSWER_BYTES: usize = 6 * 1024 * 1024;

/// One HTTP endpoint.
#[derive(Debug, Clone)]
pub struct HttpBackend {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
}

impl HttpBackend {
    /// An endpoint reached through the shared `client`, answering within `timeout`.
    pub fn new(client: reqwest::Client, url: reqwest::Url, timeout: Duration) -> Self {
        HttpBackend {
            client,
            url,
            timeout,
        }
    }

    /// The client every backend of a server shares.
    pub fn shared_client() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a client without TLS always builds")
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// POSTs `payload` and returns the body of a 2xx answer.
    ///
    /// A timeout (the whole exchange, body included), a status that is not 2xx, an answer
    /// over [`MAX_ANSWER_BYTES`] or a broken connection is an error.
    pub async fn call(&self, payload: Vec<u8>) -> Result<Bytes, CallError> {
        let exchange = async {
            let mut response = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload)
                .send()
                .await
                .map_err(|e| CallError::Failed(format!("POST {}: {e}", self.url)))?;
            let status = response.status();
            if !status.is_success() {
                return Err(CallError::Status(status.as_u16()));
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                CallError::Failed(format!("reading the answer of {}: {e}", self.url))
            })? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(CallError::Failed(format!(
                        "the answer of {} is larger than {MAX_ANSWER_BYTES} bytes",
                        self.url
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}
