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
use crate::event::{Event, Response};
use crate::inspector::{self, Inspector, Kind};
use crate::integration::{IntegrationError, Invocation};

/// Invokes `route`'s integration with `event`; a pending answer fails with
/// [`IntegrationError::Timeout`] after `timeout`. The outcome is published to `inspector` when
/// anyone watches (the event is serialised only then).
pub(crate) fn call(
    inspector: &Arc<Inspector>,
    route: &Arc<Route>,
    event: &Event<'_>,
    timeout: Duration,
) -> Invocation {
    route.metrics.messages.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let watched = inspector.is_watched().then(|| Watched::new(route, event));
    match route.integration.invoke(event) {
        Deferred::Ready(result) => {
            record(route, started, result.is_err());
            if let Some(watched) = watched {
                watched.publish(inspector, started, &result);
            }
            Deferred::Ready(result)
        }
        Deferred::Pending(future) => {
            let route = Arc::clone(route);
            let inspector = watched.as_ref().map(|_| Arc::clone(inspector));
            Deferred::Pending(Box::pin(async move {
                let result = tokio::time::timeout(timeout, future)
                    .await
                    .unwrap_or(Err(IntegrationError::Timeout));
                record(&route, started, result.is_err());
                if let (Some(watched), Some(inspector)) = (watched, inspector) {
                    watched.publish(&inspector, started, &result);
                }
                result
            }))
        }
    }
}

/// What the inspector reports of a call, taken before the event is gone.
struct Watched {
    connection_id: String,
    route: String,
    function: String,
    request_id: String,
    event: String,
}

impl Watched {
    #[cold]
    fn new(route: &Route, event: &Event<'_>) -> Self {
        Watched {
            connection_id: inspector::id(&event.connection_id()),
            route: route.key.to_string(),
            function: route.integration.name().to_owned(),
            request_id: inspector::id(&event.request_id),
            event: inspector::cut_bytes(&event.to_json()),
        }
    }

    fn publish(
        self,
        inspector: &Inspector,
        started: Instant,
        result: &Result<Response, IntegrationError>,
    ) {
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        inspector.publish(|| {
            let (status, error, response) = match result {
                Ok(response) => (
                    Some(response.status_code),
                    None,
                    serde_json::to_vec(response)
                        .ok()
                        .map(|json| inspector::cut_bytes(&json)),
                ),
                Err(error) => (None, Some(error.to_string()), None),
            };
            Kind::Invocation {
                connection_id: self.connection_id,
                route: self.route,
                function: self.function,
                request_id: self.request_id,
                failed: !matches!(status, Some(200..=299)),
                status,
                error,
                duration_ms,
                event: self.event,
                response,
            }
        });
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
        let invocation = with_event(|e| call(&Arc::default(), &route, e, Duration::from_secs(1)));
        assert!(matches!(invocation, Deferred::Ready(Ok(_))));
        assert_eq!(route.metrics.messages.load(Ordering::Relaxed), 1);
        assert_eq!(route.metrics.errors.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_answer_times_out_and_counts_as_an_error() {
        let route = route(true);
        let invocation =
            with_event(|e| call(&Arc::default(), &route, e, Duration::from_millis(50)));
        let result = invocation.resolve().await;
        assert!(matches!(result, Err(IntegrationError::Timeout)));
        assert_eq!(route.metrics.messages.load(Ordering::Relaxed), 1);
        assert_eq!(route.metrics.errors.load(Ordering::Relaxed), 1);
    }
}
