//! The chat from the two articles, as a built-in app.
//!
//! Like the articles' Lambda functions, it keeps its own table of connection ids (`$connect`
//! puts, `$disconnect` deletes) and pushes through the management API, deleting ids that
//! answer 410 (a client can vanish without `$disconnect` running).
//!
//! - `{"action":"sendmessage","message":"hi"}`: `hi` to every *other* connection (article 2,
//!   the AWS docs tutorial);
//! - `{"action":"sendmessage","data":"hi"}` and `{"action":"sendMessage","data":"hi"}`: `hi`
//!   to *every* connection, the sender included (aws-samples chat, article 1);
//! - anything else reaches `$default`, which answers with the sender's connection info.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::api::{Api, ApiError, keys};
use crate::event::{Event, Response};
use crate::gateway::frame::OutFrame;
use crate::gateway::registry::{ConnectionInfo, Deferred, ManageError};
use crate::ids::Id;
use crate::integration::{Integration, IntegrationError, Invocation};
use crate::management::ManagementApi;
use crate::selection::SelectionExpression;
use crate::time;

type Table = HashSet<Id, foldhash::fast::RandomState>;

/// The articles' chat: one handler for all five routes, like a single Lambda function.
#[derive(Debug)]
pub struct ArticlesChat {
    connections: Arc<Mutex<Table>>,
    management: ManagementApi,
}

impl ArticlesChat {
    /// The chat, pushing through `management`.
    pub fn new(management: ManagementApi) -> Self {
        ArticlesChat {
            connections: Arc::default(),
            management,
        }
    }

    /// The API: `$connect`, `$disconnect`, `$default`, `sendmessage` and `sendMessage`.
    pub fn api(self: Arc<Self>) -> Result<Api, ApiError> {
        let mut api = Api::new(SelectionExpression::default());
        for key in [
            keys::CONNECT,
            keys::DISCONNECT,
            keys::DEFAULT,
            "sendmessage",
            "sendMessage",
        ] {
            api = api.route(key, self.clone(), false)?;
        }
        Ok(api)
    }

    /// How many connection ids the table holds.
    pub fn table_len(&self) -> usize {
        self.connections.lock().expect("table lock").len()
    }

    /// Sends `text` to every connection in the table, except `skip`.
    ///
    /// The frame is encoded once. Ids that answer 410 are deleted from the table; a full
    /// outbox (a client that does not read) loses this message but keeps its connection.
    pub fn broadcast(&self, text: &str, skip: Option<Id>) -> Result<(), IntegrationError> {
        let frame = OutFrame::text(text.as_bytes());
        let mut gone = Vec::new();
        let mut pending = Vec::new();
        {
            let table = self.connections.lock().expect("table lock");
            for id in table.iter() {
                if Some(*id) == skip {
                    continue;
                }
                match self.management.post_frame(id, &frame) {
                    Deferred::Ready(Ok(())) => {}
                    Deferred::Ready(Err(ManageError::Gone)) => gone.push(*id),
                    Deferred::Ready(Err(ManageError::Full)) => {
                        tracing::debug!(connection_id = %id, "outbox full, message dropped for this client");
                    }
                    Deferred::Ready(Err(e)) => {
                        tracing::warn!(connection_id = %id, error = %e, "post failed")
                    }
                    Deferred::Pending(f) => pending.push((*id, f)),
                }
            }
        }
        if !pending.is_empty() {
            // Remote connections (cluster mode): finish the posts off the connection's task.
            let table = self.connections.clone();
            tokio::spawn(async move {
                for (id, f) in pending {
                    if let Err(ManageError::Gone) = f.await {
                        table.lock().expect("table lock").remove(&id);
                    }
                }
            });
        }
        if !gone.is_empty() {
            let mut table = self.connections.lock().expect("table lock");
            for id in &gone {
                table.remove(id);
            }
        }
        Ok(())
    }

    fn send_message(&self, event: &Event<'_>) -> Result<Response, IntegrationError> {
        let sender = event.connection_id();
        let Some(body) = event.body_json() else {
            return Err(IntegrationError::Failed("the message is not JSON".into()));
        };
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Some(message) = body.get("message") {
            self.broadcast(&text(message), Some(sender))?;
        } else if let Some(data) = body.get("data") {
            self.broadcast(&text(data), None)?;
        } else {
            self.reply(sender, r#"Error: a sendmessage frame needs "message" (sent to everyone else) or "data" (sent to everyone)"#);
        }
        Ok(Response::with_body("Data sent."))
    }

    fn default_route(&self, event: &Event<'_>) -> Result<Response, IntegrationError> {
        let id = event.connection_id();
        let info = match self.management.get(&id) {
            Deferred::Ready(r) => r,
            // Local connections answer at once; the sender is always local.
            Deferred::Pending(_) => Err(ManageError::Unavailable("remote sender".into())),
        };
        let info = info.map_err(|e| IntegrationError::Failed(e.to_string()))?;
        self.reply(
            id,
            &format!(
                "Use the sendmessage route to send a message. Your info: {}",
                tutorial_info(&info, id)
            ),
        );
        Ok(Response::ok())
    }

    fn reply(&self, id: Id, text: &str) {
        if let Deferred::Ready(Err(e)) = self.management.post(&id, text.as_bytes()) {
            tracing::debug!(connection_id = %id, error = %e, "reply not delivered");
        }
    }
}

/// The connection info as the AWS tutorial prints it (SDK casing).
fn tutorial_info(info: &ConnectionInfo, id: Id) -> String {
    serde_json::json!({
        "ConnectedAt": time::iso_ms(info.connected_at_ms),
        "Identity": {
            "SourceIp": info.source_ip,
            "UserAgent": info.user_agent,
        },
        "LastActiveAt": time::iso_ms(info.last_active_ms),
        "connectionID": id.as_str(),
    })
    .to_string()
}

impl Integration for ArticlesChat {
    fn invoke(&self, event: &Event<'_>) -> Invocation {
        let id = event.connection_id();
        let result = match event.route_key {
            keys::CONNECT => {
                self.connections.lock().expect("table lock").insert(id);
                Ok(Response::with_body("Connected."))
            }
            keys::DISCONNECT => {
                self.connections.lock().expect("table lock").remove(&id);
                Ok(Response::with_body("Disconnected."))
            }
            "sendmessage" | "sendMessage" => self.send_message(event),
            _ => self.default_route(event),
        };
        Deferred::Ready(result)
    }

    fn name(&self) -> &str {
        "articles-chat"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ApiContext, ConnectionContext, EventKind};
    use crate::gateway::conn::Conn;
    use crate::gateway::registry::LocalRegistry;

    fn context(id: Id) -> ConnectionContext {
        ConnectionContext {
            connection_id: id,
            connected_at_ms: 0,
            source_ip: "127.0.0.1".parse().unwrap(),
            user_agent: None,
            domain_name: "localhost".into(),
            authorizer: None,
        }
    }

    fn lifecycle(chat: &ArticlesChat, key: &str, id: Id) {
        let api = ApiContext {
            api_id: "a".into(),
            stage: "dev".into(),
        };
        let c = context(id);
        let event = Event {
            route_key: key,
            request_id: Id::random(),
            request_time_ms: 0,
            api: &api,
            connection: &c,
            kind: EventKind::Disconnect {
                code: 1000,
                reason: "",
            },
        };
        let _ = chat.invoke(&event);
    }

    #[test]
    fn ids_that_answer_410_are_deleted_from_the_table() {
        let registry = Arc::new(LocalRegistry::new());
        let chat = ArticlesChat::new(ManagementApi::new(registry.clone(), 1024));
        let live = Arc::new(Conn::new(context(Id::random()), 4096));
        registry.insert(live.clone());
        lifecycle(&chat, keys::CONNECT, live.id());
        // A stale id: in the table, but the connection vanished without `$disconnect`.
        lifecycle(&chat, keys::CONNECT, Id::random());
        assert_eq!(chat.table_len(), 2);
        chat.broadcast("hi", None).unwrap();
        assert_eq!(chat.table_len(), 1);
        assert_eq!(live.queued_bytes(), 4);
        lifecycle(&chat, keys::DISCONNECT, live.id());
        assert_eq!(chat.table_len(), 0);
    }
}
