//! Integrations: what handles a route's events.
//!
//! Every integration receives the same AWS proxy [`Event`] and returns a proxy-style
//! [`Response`]. Built-in integrations answer synchronously ([`Deferred::Ready`]); integrations
//! that call out (HTTP, Lambda) return a future that owns everything it needs.

use crate::event::{Event, Response};
use crate::gateway::registry::Deferred;

pub mod echo;

/// Why an integration call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrationError {
    /// The integration did not answer within its timeout.
    #[error("the integration timed out")]
    Timeout,
    /// The integration failed or returned something that is not a proxy result.
    #[error("the integration failed: {0}")]
    Failed(String),
}

/// The outcome of one integration call.
pub type Invocation = Deferred<Result<Response, IntegrationError>>;

/// A route's handler.
pub trait Integration: Send + Sync + 'static {
    /// Handles one event.
    fn invoke(&self, event: &Event<'_>) -> Invocation;

    /// A short name for logs.
    fn name(&self) -> &str;
}
