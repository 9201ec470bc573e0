//! Calling a route's integration: the one path that `$connect`, messages and `$disconnect` take.
//!
//! A call counts the route's messages, bounds an integration that answers later by the
//! integration timeout, and records latency and errors once the result is known. A result that
//! is ready now (a built-in integration) comes back as it is: no future is allocated on the
//! message path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::api::Route;
use crate::deferred::Deferred;
use crate::event::Event;
use crate::integration::{IntegrationError, Invocation};

/// Invokes `route`'s integration with `event`; a pending answer fails with
/// [`IntegrationError::Timeout`] after `timeout`.
pub(crate) fn call(route: &Arc<Route>, event: &Event<'_>, timeout: Duration) -> Invocation {
    route.metrics.messages.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    match route.integration.invoke(event) {
        Deferred::Ready(result) => {
            record(route, started, result.is_err());
            Deferred::Ready(result)
        }
        Deferred::Pending(future) => {
            let route = Arc::clone(route);
            Deferred::Pending(Box::pin(async move {
                let result = tokio::time::timeout(timeout, future)
                    .await
                    .unwrap_or(Err(IntegrationError::Timeout));
                record(&route, started, result.is_err());
                result
            }))
        }
    }
}

fn record(route: &Route, started: Instant, failed: bool) {
    route.metrics.latency.observe(started.elapsed());
    if failed {
        route.metrics.errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Api;
    use crate::event::{ApiContext, ConnectionContext, EventKind, Response};
    use crate::ids::Id;
    use crate::integration::Integration;
    use crate::selection::SelectionExpression;

    /// Answers now or never, as asked.
    struct Fixed {
        never: bool,
    }

    impl Integration for Fixed {
        fn invoke(&self, _event: &Event<'_>) -> Invocation {
            if self.never {
                Deferred::Pending(Box::pin(std::future::pending()))
            } else {
                Deferred::Ready(Ok(Response::ok()))
            }
        }

        fn name(&self) -> &str {
            "fixed"
        }
    }

    fn route(never: bool) -> Arc<Route> {
        let api = Api::new(SelectionExpression::default())
            .route("r", Arc::new(Fixed { never }), false)
            .unwrap();
        Arc::clone(api.get("r").unwrap())
    }

    fn with_event<T>(f: impl FnOnce(&Event<'_>) -> T) -> T {
        let api = ApiContext {
            api_id: "api".into(),
            stage: "dev".into(),
        };
        let connection = ConnectionContext {
            connection_id: Id::random(),
            connected_at_ms: 0,
            source_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            user_agent: None,
            domain_name: "localhost".into(),
            authorizer: None,
        };
        let event = Event {
            route_key: "r",
            request_id: Id::random(),
            request_time_ms: 0,
            api: &api,
            connection: &connection,
            kind: EventKind::Disconnect {
                code: 1000,
                reason: "",
            },
        };
        f(&event)
    }

    #[test]
    fn a_ready_answer_is_counted_without_a_future() {
        let route = route(false);
        let invocation = with_event(|e| call(&route, e, Duration::from_secs(1)));
        assert!(matches!(invocation, Deferred::Ready(Ok(_))));
        assert_eq!(route.metrics.messages.load(Ordering::Relaxed), 1);
        assert_eq!(route.metrics.errors.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_answer_times_out_and_counts_as_an_error() {
        let route = route(true);
        let invocation = with_event(|e| call(&route, e, Duration::from_millis(50)));
        let result = invocation.resolve().await;
        assert!(matches!(result, Err(IntegrationError::Timeout)));
        assert_eq!(route.metrics.messages.load(Ordering::Relaxed), 1);
        assert_eq!(route.metrics.errors.load(Ordering::Relaxed), 1);
    }
}
