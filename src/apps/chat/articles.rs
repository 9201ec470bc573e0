//! The two articles' routes, with their exact behaviour: `sendmessage` / `sendMessage`, and
//! the AWS tutorial's `$default` reply.
//!
//! - `{"action":"sendmessage","message":"hi"}`: `hi` to every *other* connection (article 2,
//!   the AWS docs tutorial);
//! - `{"action":"sendmessage","data":"hi"}` and `{"action":"sendMessage","data":"hi"}`: `hi`
//!   to *every* connection, the sender included (aws-samples chat, article 1);
//! - anything else reaches `$default`, which answers with the sender's connection info.
//!
//! "Every connection" means the plain clients (connections that never joined a room), which
//! get the raw text as the articles' clients expect, and the lobby's members, who get it as a
//! lobby message; it is stored in the lobby's history like any other.

use serde_json::Value;

use crate::gateway::registry::ConnectionInfo;
use crate::ids::Id;
use crate::time;

/// What a `sendmessage` frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broadcast {
    /// The text every recipient gets.
    pub(crate) text: Box<str>,
    /// Whether the sender is left out (`message`) or included (`data`).
    pub(crate) skip_sender: bool,
}

/// The reply to a `sendmessage` frame with neither field.
pub(crate) const MISSING_CONTENT: &str = r#"Error: a sendmessage frame needs "message" (sent to everyone else) or "data" (sent to everyone)"#;

/// Reads a `sendmessage` frame; `None` when it has neither `message` nor `data`.
pub(crate) fn broadcast(body: &Value) -> Option<Broadcast> {
    let text = |v: &Value| -> Box<str> {
        match v {
            Value::String(s) => s.as_str().into(),
            other => other.to_string().into(),
        }
    };
    if let Some(message) = body.get("message") {
        Some(Broadcast {
            text: text(message),
            skip_sender: true,
        })
    } else {
        body.get("data").map(|data| Broadcast {
            text: text(data),
            skip_sender: false,
        })
    }
}

/// The tutorial's `$default` reply: the connection info as the AWS SDKs print it.
pub(crate) fn tutorial_reply(info: &ConnectionInfo, id: Id) -> String {
    let info = serde_json::json!({
        "ConnectedAt": time::iso_ms(info.connected_at_ms),
        "Identity": {
            "SourceIp": info.source_ip,
            "UserAgent": info.user_agent,
        },
        "LastActiveAt": time::iso_ms(info.last_active_ms),
        "connectionID": id.as_str(),
    });
    format!("Use the sendmessage route to send a message. Your info: {info}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_skips_the_sender_and_data_does_not() {
        assert_eq!(
            broadcast(&json!({"message": "hi"})),
            Some(Broadcast {
                text: "hi".into(),
                skip_sender: true
            })
        );
        assert_eq!(
            broadcast(&json!({"data": {"a": 1}})),
            Some(Broadcast {
                text: r#"{"a":1}"#.into(),
                skip_sender: false
            })
        );
        assert_eq!(broadcast(&json!({"action": "sendmessage"})), None);
    }
}
