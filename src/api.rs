//! An API definition: the route selection expression and the routes it selects from.
//!
//! Route selection is pure: it reads a frame and returns the route, doing no I/O.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::authorizer::Authorizer;
use crate::event::Message;
use crate::integration::Integration;
use crate::metrics::RouteMetrics;
pub use crate::selection::SelectionExpression;

/// The special route keys.
pub mod keys {
    /// Runs during the handshake.
    pub const CONNECT: &str = "$connect";
    /// Runs after a connection closed.
    pub const DISCONNECT: &str = "$disconnect";
    /// Takes messages no other route matched.
    pub const DEFAULT: &str = "$default";
}

/// One route: its integration and whether its result goes back to the client.
pub struct Route {
    /// The route key.
    pub key: Arc<str>,
    /// The handler.
    pub integration: Arc<dyn Integration>,
    /// Whether a route response (`$default`) sends the result's body back as a frame.
    pub two_way: bool,
    /// What is counted for this route.
    pub metrics: RouteMetrics,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("key", &self.key)
            .field("integration", &self.integration.name())
            .field("two_way", &self.two_way)
            .finish()
    }
}

/// Why an API definition is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Custom route keys cannot start with `$`.
    #[error(
        "route key {0:?} is not allowed: only $connect, $disconnect and $default may start with `$`"
    )]
    ReservedKey(String),
    /// A route key is empty.
    #[error("route keys cannot be empty")]
    EmptyKey,
    /// `$connect` and `$disconnect` have no response to send.
    #[error("route {0} cannot have a route response")]
    TwoWayNotAllowed(String),
}

/// The routes of one API.
#[derive(Debug, Clone)]
pub struct Api {
    selection: SelectionExpression,
    routes: HashMap<Arc<str>, Arc<Route>>,
    authorizer: Option<Arc<Authorizer>>,
}

/// The outcome of route selection for one message.
#[derive(Debug)]
pub struct Selected<'a> {
    /// The route, or `None` when nothing matched and there is no `$default`.
    pub route: Option<&'a Arc<Route>>,
    /// The frame parsed as JSON, when selection needed to parse it.
    pub json: Option<Value>,
}

impl Api {
    /// An API with no routes.
    pub fn new(selection: SelectionExpression) -> Self {
        Api {
            selection,
            routes: HashMap::new(),
            authorizer: None,
        }
    }

    /// Protects `$connect` with an authorizer.
    pub fn with_authorizer(mut self, authorizer: Arc<Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// The `$connect` authorizer, if any.
    pub fn authorizer(&self) -> Option<&Authorizer> {
        self.authorizer.as_deref()
    }

    /// Adds (or replaces) a route.
    pub fn route(
        mut self,
        key: &str,
        integration: Arc<dyn Integration>,
        two_way: bool,
    ) -> Result<Self, ApiError> {
        if key.is_empty() {
            return Err(ApiError::EmptyKey);
        }
        let special = [keys::CONNECT, keys::DISCONNECT, keys::DEFAULT].contains(&key);
        if key.starts_with('$') && !special {
            return Err(ApiError::ReservedKey(key.to_owned()));
        }
        if two_way && (key == keys::CONNECT || key == keys::DISCONNECT) {
            return Err(ApiError::TwoWayNotAllowed(key.to_owned()));
        }
        let key: Arc<str> = Arc::from(key);
        self.routes.insert(
            key.clone(),
            Arc::new(Route {
                key,
                integration,
                two_way,
                metrics: RouteMetrics::default(),
            }),
        );
        Ok(self)
    }

    /// A route by key.
    pub fn get(&self, key: &str) -> Option<&Arc<Route>> {
        self.routes.get(key)
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values().map(|r| &**r)
    }

    /// The route keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.routes.keys().map(|k| &**k).collect();
        keys.sort_unstable();
        keys
    }

    /// The route selection expression.
    pub fn selection(&self) -> &SelectionExpression {
        &self.selection
    }

    /// Selects the route for a message.
    pub fn select(&self, message: &Message) -> Selected<'_> {
        let default = || self.routes.get(keys::DEFAULT);
        let text = match message.text() {
            Some(text) if !message.binary => text,
            _ => {
                return Selected {
                    route: default(),
                    json: None,
                };
            }
        };
        let (key, json) = if self.selection.needs_json() {
            match serde_json::from_str::<Value>(text) {
                Ok(json) => (self.selection.evaluate_json(&json), Some(json)),
                Err(_) => {
                    return Selected {
                        route: default(),
                        json: None,
                    };
                }
            }
        } else {
            (self.selection.evaluate_json(&Value::Null), None)
        };
        let route = match key.as_str() {
            // Messages never reach the lifecycle routes.
            keys::CONNECT | keys::DISCONNECT => None,
            key => self.routes.get(key),
        }
        .or_else(default);
        Selected { route, json }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deferred::Deferred;
    use crate::event::{Event, Response};
    use crate::integration::Invocation;
    use bytes::Bytes;

    struct Named(&'static str);
    impl Integration for Named {
        fn invoke(&self, _: &Event<'_>) -> Invocation {
            Deferred::Ready(Ok(Response::ok()))
        }
        fn name(&self) -> &str {
            self.0
        }
    }

    fn api(with_default: bool) -> Api {
        let mut api = Api::new(SelectionExpression::default())
            .route("sendmessage", Arc::new(Named("send")), false)
            .unwrap()
            .route("$connect", Arc::new(Named("connect")), false)
            .unwrap();
        if with_default {
            api = api
                .route("$default", Arc::new(Named("default")), false)
                .unwrap();
        }
        api
    }

    fn text(s: &'static str) -> Message {
        Message {
            data: Bytes::from_static(s.as_bytes()),
            binary: false,
        }
    }

    fn name(api: &Api, body: &'static str) -> Option<String> {
        api.select(&text(body))
            .route
            .map(|r| r.integration.name().to_owned())
    }

    #[test]
    fn selects_exactly_and_falls_back_to_default() {
        let a = api(true);
        assert_eq!(
            name(&a, r#"{"action":"sendmessage"}"#).as_deref(),
            Some("send")
        );
        assert_eq!(
            name(&a, r#"{"action":"sendMessage"}"#).as_deref(),
            Some("default")
        );
        assert_eq!(name(&a, "not json").as_deref(), Some("default"));
        assert_eq!(
            name(&a, r#"{"action":"$connect"}"#).as_deref(),
            Some("default")
        );
        assert_eq!(name(&a, r#"{"x":1}"#).as_deref(), Some("default"));
        let b = api(false);
        assert_eq!(name(&b, "not json"), None);
        assert_eq!(name(&b, r#"{"action":"nope"}"#), None);
        assert!(
            a.select(&text(r#"{"action":"sendmessage"}"#))
                .json
                .is_some()
        );
    }

    #[test]
    fn rejects_bad_route_keys() {
        let api = Api::new(SelectionExpression::default());
        assert!(matches!(
            api.clone().route("$custom", Arc::new(Named("x")), false),
            Err(ApiError::ReservedKey(_))
        ));
        assert!(matches!(
            api.clone().route("", Arc::new(Named("x")), false),
            Err(ApiError::EmptyKey)
        ));
        assert!(matches!(
            api.route("$connect", Arc::new(Named("x")), true),
            Err(ApiError::TwoWayNotAllowed(_))
        ));
    }
}
