//! The gateway: shared state and the life of a WebSocket connection.
//!
//! A connection lives in four steps, each in its own file:
//! 1. [`handshake`]: read the request head, validate it, run `$connect`;
//! 2. here: answer `101`, register the connection so the management API can reach it;
//! 3. [`driver`]: move frames both ways until the connection closes;
//! 4. here: unregister, then run `$disconnect` with the close code and reason.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::api::{Api, keys};
use crate::config::Limits;
use crate::event::{ApiContext, Event, EventKind};
use crate::gateway::conn::{Conn, SweepClock};
use crate::gateway::driver::{Disconnect, Driver};
use crate::gateway::frame::DecodeLimits;
use crate::gateway::handshake::Accepted;
use crate::gateway::registry::Registry;
use crate::ids::Id;
use crate::inspector::{self, Kind};
use crate::management::ManagementApi;
pub use crate::metrics::Metrics;
use crate::time;

mod call;
pub mod conn;
pub mod driver;
pub mod frame;
pub mod handshake;
pub mod registry;

/// [`Gateway::serve_accepted`] for any handle on the gateway (`&Gateway`, `Arc<Gateway>`).
///
/// Not an `async fn`: those keep every argument twice (as argument and as binding), and this
/// future is what an idle connection's task holds. Here each value is captured once.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice"
)]
pub(crate) fn serve<'a, G, S>(
    gw: G,
    conn: Arc<Conn>,
    io: S,
    leftover: BytesMut,
    peer: SocketAddr,
) -> impl Future<Output = ()> + 'a
where
    G: std::ops::Deref<Target = Gateway> + 'a,
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    async move {
        let gw = &*gw;
        let id = conn.id();
        // The connection's span is made where something is logged, not held and entered on
        // every poll: an idle connection should not pay for it, nor a busy one per frame.
        let span = || conn_span(id, peer);
        if !gw.registry.register(conn.clone()).resolve().await {
            // Ids are checked when they are made; a clash here is a bug worth knowing of.
            span().in_scope(|| tracing::error!("connection id already registered"));
            return;
        }
        span().in_scope(|| tracing::info!(source_ip = %conn.context.source_ip, "connected"));
        gw.management.inspector().publish(|| Kind::Connected {
            connection_id: inspector::id(&id),
            source_ip: conn.context.source_ip.to_string(),
            user_agent: conn.context.user_agent.as_deref().map(str::to_owned),
        });
        gw.metrics
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        if gw.shutdown.is_cancelled() {
            conn.request_close(1001, "Going away");
        }
        let disconnect = Driver::new(gw, conn.clone(), io, leftover, peer)
            .run()
            .await;
        gw.registry.unregister(&id);
        span().in_scope(|| {
            tracing::info!(code = disconnect.code, reason = %disconnect.reason, "disconnected");
        });
        gw.metrics.closed(disconnect.code);
        gw.management.inspector().publish(|| Kind::Disconnected {
            connection_id: inspector::id(&id),
            code: disconnect.code,
            reason: disconnect.reason.to_string(),
        });
        // Boxed: only a closing connection needs room for the `$disconnect` call.
        Box::pin(gw.run_disconnect(&conn, &disconnect).instrument(span())).await;
    }
}

/// The span of one connection: its id and peer.
pub(crate) fn conn_span(id: Id, peer: SocketAddr) -> tracing::Span {
    tracing::info_span!("conn", id = %id, peer = %peer)
}

/// State shared by every connection of one server.
pub struct Gateway {
    /// Limits.
    pub limits: Limits,
    pub(crate) decode_limits: DecodeLimits,
    /// The routes.
    pub api: Api,
    /// The API id and stage reported in events.
    pub api_context: ApiContext,
    /// The connections.
    pub registry: Arc<dyn Registry>,
    /// The management interface over `registry`.
    pub management: ManagementApi,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Every task that must finish before the server has stopped.
    pub tracker: TaskTracker,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("stage", &self.api_context.stage)
            .field("routes", &self.api.keys())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway serving `api` over `registry`, counting into `metrics` (which `management`
    /// counts its outbox overflows into too).
    pub fn new(
        limits: Limits,
        api: Api,
        api_context: ApiContext,
        registry: Arc<dyn Registry>,
        management: ManagementApi,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gateway {
            decode_limits: DecodeLimits {
                max_frame: limits.max_frame_bytes,
                max_message: limits.max_message_bytes,
                accept_binary: limits.accept_binary,
            },
            limits,
            api,
            api_context,
            registry,
            metrics,
            management,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Runs an accepted connection, its `101` already sent, to its end: frames, `$disconnect`.
    pub async fn serve_accepted<S>(
        &self,
        accepted: Accepted,
        io: S,
        leftover: BytesMut,
        peer: SocketAddr,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        serve(self, accepted.conn, io, leftover, peer).await;
    }

    async fn run_disconnect(&self, conn: &Conn, disconnect: &Disconnect) {
        let Some(route) = self.api.get(keys::DISCONNECT) else {
            return;
        };
        let event = Event {
            route_key: keys::DISCONNECT,
            request_id: Id::random(),
            request_time_ms: time::now_ms(),
            api: &self.api_context,
            connection: &conn.context,
            kind: EventKind::Disconnect {
                code: disconnect.code,
                reason: &disconnect.reason,
            },
        };
        let timeout = self.limits.integration_timeout();
        let inspector = self.management.inspector();
        if let Err(error) = call::call(inspector, route, &event, timeout)
            .resolve()
            .await
        {
            tracing::warn!(%error, "$disconnect integration failed");
        }
    }

    /// Closes connections that have been idle or open too long, on tokio's clock
    /// ([`SweepClock`]), checked every tenth of the shorter limit (50 ms to 1 s). Runs until
    /// shutdown.
    pub async fn sweep(&self) {
        let idle = self.limits.idle_timeout();
        let lifetime = self.limits.max_lifetime();
        let tick =
            (idle.min(lifetime) / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let clock = SweepClock::start();
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let now = clock.now();
            for conn in self.registry.local_connections() {
                if conn.quiet_for(now) >= idle || conn.age(now) >= lifetime {
                    conn.request_close(1001, "Going away");
                }
            }
        }
    }

    /// Starts a graceful shutdown: every connection is closed with 1001.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        for conn in self.registry.local_connections() {
            conn.request_close(1001, "Going away");
        }
    }
}
