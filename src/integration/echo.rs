//! The built-in `echo` integration: answers every message with the same message.
//!
//! It is meant for two-way routes (`route_response = "$default"`): the result's body is the
//! frame it received, base64-flagged for binary frames so the reply keeps the frame type.

use base64::Engine;

use crate::deferred::Deferred;
use crate::event::{Event, Response};
use crate::integration::{Integration, Invocation};

/// Sends every message back to its sender.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Integration for Echo {
    fn invoke(&self, event: &Event<'_>) -> Invocation {
        let Some(message) = event.message() else {
            return Deferred::Ready(Ok(Response::ok()));
        };
        let response = match (message.binary, message.text()) {
            (false, Some(text)) => Response::with_body(text),
            _ => Response {
                body: Some(base64::engine::general_purpose::STANDARD.encode(&message.data)),
                is_base64_encoded: true,
                ..Response::ok()
            },
        };
        Deferred::Ready(Ok(response))
    }

    fn name(&self) -> &str {
        "echo"
    }
}
