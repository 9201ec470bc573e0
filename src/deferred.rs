//! [`Deferred`]: a result that is ready now or needs awaiting.
//!
//! Local operations (a push into a connection's outbox, a built-in integration) complete
//! synchronously, so the hot paths never allocate a future; remote ones (another node, an HTTP
//! backend, a Lambda process) hand back a boxed future.

use std::future::Future;
use std::pin::Pin;

/// A result that is either ready now or needs awaiting (a remote node, an HTTP backend).
pub enum Deferred<T> {
    /// Available now.
    Ready(T),
    /// Available later.
    Pending(Pin<Box<dyn Future<Output = T> + Send + 'static>>),
}

impl<T> Deferred<T> {
    /// Awaits the result.
    pub async fn resolve(self) -> T {
        match self {
            Deferred::Ready(value) => value,
            Deferred::Pending(future) => future.await,
        }
    }
}

impl<T> std::fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Deferred::Ready(_) => "Deferred::Ready",
            Deferred::Pending(_) => "Deferred::Pending",
        })
    }
}
