//! Command-line clients: a `wscat`-like WebSocket client and the management API calls.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The WebSocket connection failed.
    #[error("{0}")]
    WebSocket(String),
    /// The HTTP call failed before an answer.
    #[error("request failed: {0}")]
    Http(String),
    /// The management API answered with an error.
    #[error("{error_type} ({status}): {message}")]
    Api {
        /// The status code.
        status: u16,
        /// `x-amzn-ErrorType`.
        error_type: String,
        /// The message.
        message: String,
    },
    /// A header argument is not `Name: value`.
    #[error("invalid header {0:?}: use \"Name: value\"")]
    BadHeader(String),
}

/// Options of `switchboard connect`.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The WebSocket URL.
    pub url: String,
    /// Extra handshake headers, `Name: value`.
    pub headers: Vec<String>,
    /// A subprotocol to request.
    pub subprotocol: Option<String>,
    /// Messages to send right after connecting, instead of reading stdin.
    pub execute: Vec<String>,
    /// Seconds to wait for replies after `execute` (or after stdin ends).
    pub wait: Option<f64>,
}

/// Connects like `wscat -c`: sends stdin lines (or `--execute` messages), prints `< frame`.
pub async fn connect(options: ConnectOptions) -> Result<(), CliError> {
    let mut request = options
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::WebSocket(e.to_string()))?;
    for header in &options.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| CliError::BadHeader(header.clone()))?;
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name
            .trim()
            .parse()
            .map_err(|_| CliError::BadHeader(header.clone()))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| CliError::BadHeader(header.clone()))?;
        request.headers_mut().append(name, value);
    }
    if let Some(protocol) = &options.subprotocol {
        let value =
            HeaderValue::from_str(protocol).map_err(|_| CliError::BadHeader(protocol.clone()))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => CliError::WebSocket(format!(
                "Unexpected server response: {}",
                response.status().as_u16()
            )),
            other => CliError::WebSocket(other.to_string()),
        })?;
    println!("Connected (press CTRL+C to quit)");
    let (mut sink, mut stream) = socket.split();

    let scripted = !options.execute.is_empty();
    let mut outgoing: tokio::sync::mpsc::Receiver<String> = {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        if scripted {
            let messages = options.execute.clone();
            tokio::spawn(async move {
                for m in messages {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            });
        } else {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            });
        }
        rx
    };
    let mut input_open = true;
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            line = outgoing.recv(), if input_open => match line {
                Some(line) => {
                    if sink.send(Message::text(line)).await.is_err() {
                        break;
                    }
                }
                None => {
                    input_open = false;
                    let wait = options.wait.unwrap_or(if scripted { 1.0 } else { 0.0 });
                    deadline = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait))));
                }
            },
            _ = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() => {
                let _ = sink.send(Message::Close(None)).await;
                deadline = None;
                // Keep reading until the server answers the close.
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => println!("< {text}"),
                Some(Ok(Message::Binary(data))) => println!("< <binary: {} bytes>", data.len()),
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(f) => println!("Disconnected (code: {}, reason: \"{}\")", u16::from(f.code), f.reason),
                        None => println!("Disconnected (code: 1005, reason: \"\")"),
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(CliError::WebSocket(e.to_string())),
                None => break,
            },
        }
    }
    Ok(())
}

/// Characters botocore leaves unencoded in a path parameter (`-._~` and alphanumerics).
const PATH_PARAM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The management URL of a connection under an endpoint such as `http://host:8080/dev`.
pub fn connection_url(endpoint: &str, connection_id: &str) -> String {
    format!(
        "{}/@connections/{}",
        endpoint.trim_end_matches('/'),
        utf8_percent_encode(connection_id, PATH_PARAM)
    )
}

/// A management API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManageCall {
    /// PostToConnection with this body.
    Post(Vec<u8>),
    /// GetConnection.
    Get,
    /// DeleteConnection.
    Delete,
}

/// Calls the management API; returns the response body.
pub async fn manage(
    endpoint: &str,
    connection_id: &str,
    call: ManageCall,
) -> Result<String, CliError> {
    let client = reqwest::Client::new();
    let url = connection_url(endpoint, connection_id);
    let request = match call {
        ManageCall::Post(data) => client.post(&url).body(data),
        ManageCall::Get => client.get(&url),
        ManageCall::Delete => client.delete(&url),
    };
    let response = request
        .send()
        .await
        .map_err(|e| CliError::Http(e.to_string()))?;
    let status = response.status();
    let error_type = response
        .headers()
        .get("x-amzn-ErrorType")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .text()
        .await
        .map_err(|e| CliError::Http(e.to_string()))?;
    if status.is_success() {
        return Ok(body);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str().map(str::to_owned)))
        .unwrap_or(body);
    Err(CliError::Api {
        status: status.as_u16(),
        error_type: error_type.unwrap_or_else(|| "HttpError".into()),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_ids_like_botocore() {
        assert_eq!(
            connection_url("http://127.0.0.1:8080/dev/", "Tq3mxb7WNjMCFhA="),
            "http://127.0.0.1:8080/dev/@connections/Tq3mxb7WNjMCFhA%3D"
        );
    }
}

/// Options of `switchboard tail`.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// The server, e.g. `http://127.0.0.1:8080` (a path after it is ignored).
    pub endpoint: String,
    /// Only events of this route.
    pub route: Option<String>,
    /// Only events of this connection.
    pub connection: Option<String>,
    /// Only events of this function.
    pub function: Option<String>,
    /// Print each event's JSON instead of a line of text.
    pub json: bool,
    /// Colour the lines (when stdout is a terminal).
    pub colour: bool,
    /// HTTP Basic credentials (access key id, secret) when the server has management
    /// credentials configured.
    pub credentials: Option<(String, String)>,
}

/// `switchboard tail`: follows the inspector's event stream and writes one line per event to
/// `out` until the server ends the stream.
pub async fn tail(
    options: TailOptions,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), CliError> {
    let mut url = reqwest::Url::parse(&options.endpoint)
        .map_err(|e| CliError::Http(format!("invalid endpoint {:?}: {e}", options.endpoint)))?;
    url.set_path("/_switchboard/stream");
    url.set_query(None);
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in [
            ("route", &options.route),
            ("connection", &options.connection),
            ("function", &options.function),
        ] {
            if let Some(value) = value {
                query.append_pair(key, value);
            }
        }
    }
    let mut request = reqwest::Client::new().get(url);
    if let Some((id, secret)) = &options.credentials {
        request = request.basic_auth(id, Some(secret));
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| CliError::Http(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        return Err(CliError::Api {
            status: status.as_u16(),
            error_type: "InspectorError".into(),
            message,
        });
    }
    let mut buffer = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CliError::Http(e.to_string()))?
    {
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data: ") else {
                continue;
            };
            let text = if options.json {
                data.to_owned()
            } else {
                match serde_json::from_str(data) {
                    Ok(event) => tail_line(&event, options.colour),
                    Err(_) => data.to_owned(),
                }
            };
            writeln!(out, "{text}")
                .and_then(|()| out.flush())
                .map_err(|e| CliError::Http(format!("cannot write: {e}")))?;
        }
    }
    Ok(())
}

/// One inspector event as a line of text, coloured with ANSI codes when `colour`.
pub fn tail_line(event: &serde_json::Value, colour: bool) -> String {
    let s = |key: &str| match &event[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let kind = s("type");
    let time = event["time_ms"]
        .as_i64()
        .map(crate::time::iso_ms)
        .unwrap_or_default();
    let (code, text) = match kind.as_str() {
        "connected" => (
            "32",
            format!("{} from {}", s("connection_id"), s("source_ip")),
        ),
        "disconnected" => (
            "33",
            format!("{} code {} {}", s("connection_id"), s("code"), s("reason")),
        ),
        "frame" => (
            "0",
            format!("{} {} B {}", s("connection_id"), s("size"), s("text")),
        ),
        "route" => (
            "36",
            format!(
                "{} -> {} ({} = {})",
                s("connection_id"),
                s("route"),
                s("expression"),
                s("selection")
            ),
        ),
        "invocation" => (
            if event["failed"].as_bool() == Some(true) {
                "31"
            } else {
                "35"
            },
            format!(
                "{} {} {} status {} {:.1} ms request {}",
                s("connection_id"),
                s("route"),
                s("function"),
                s("status"),
                event["duration_ms"].as_f64().unwrap_or(0.0),
                s("request_id")
            ),
        ),
        "management" => (
            if event["status"].as_u64() == Some(410) {
                "31"
            } else {
                "34"
            },
            format!(
                "{} {} by {}: {}",
                s("operation"),
                s("connection_id"),
                s("caller"),
                s("status")
            ),
        ),
        "function_log" => (
            "0",
            format!("{} {} {}", s("function"), s("request_id"), s("line")),
        ),
        "dropped" => ("33", format!("{} events dropped", s("count"))),
        _ => ("0", event.to_string()),
    };
    if colour {
        format!("{time} \x1b[{code}m{kind:<12}\x1b[0m {text}")
    } else {
        format!("{time} {kind:<12} {text}")
    }
}
