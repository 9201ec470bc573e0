//! The listener: accepting connections, telling handshakes from plain HTTP, shutting down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{Api, ApiError};
use crate::apps::articles::ArticlesChat;
use crate::config::{BuiltinApp, Config, ConfigError};
use crate::event::ApiContext;
use crate::gateway::handshake::{self, is_upgrade};
use crate::gateway::registry::{LocalRegistry, Registry};
use crate::gateway::{self, Gateway};
use crate::http::{self, ConnInfo, Prefixed};
use crate::integration::echo::Echo;
use crate::management::ManagementApi;
use crate::selection::SelectionExpression;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API definition is invalid.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A configured server, ready to serve a listener.
#[derive(Debug)]
pub struct Server {
    gateway: Arc<Gateway>,
    drain_timeout: Duration,
}

impl Server {
    /// Builds the gateway with the configured built-in API.
    pub fn new(config: Config) -> Result<Self, Error> {
        let app = config.app;
        Self::with_api(config, |management| match app {
            BuiltinApp::Chat => Arc::new(ArticlesChat::new(management)).api(),
            BuiltinApp::Echo => Api::new(SelectionExpression::default()).route(
                crate::api::keys::DEFAULT,
                Arc::new(Echo),
                true,
            ),
        })
    }

    /// Builds the gateway with an API of the caller's: `build` gets the management interface
    /// the API's integrations push through.
    pub fn with_api(
        config: Config,
        build: impl FnOnce(ManagementApi) -> Result<Api, ApiError>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new());
        let management = ManagementApi::new(registry.clone(), config.limits.max_message_bytes);
        let api = build(management.clone())?;
        let api_context = ApiContext {
            api_id: config.api_id.clone(),
            stage: config.stage.clone(),
        };
        let gateway = Gateway::new(
            config.limits.clone(),
            api,
            api_context,
            registry,
            management,
        );
        Ok(Server {
            gateway: Arc::new(gateway),
            drain_timeout: config.drain_timeout,
        })
    }

    /// The gateway's shared state.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Serves `listener` until `shutdown` completes, then drains: every connection is closed
    /// with 1001 and gets its `$disconnect`, within the drain deadline.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let gw = self.gateway;
        let router = http::router(gw.clone());
        let sweeper = gw.clone();
        gw.tracker.spawn(async move { sweeper.sweep().await });
        let limit = Arc::new(Semaphore::new(gw.limits.max_connections));
        tracing::info!(address = %listener.local_addr()?, stage = %gw.api_context.stage, "listening");
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let task = handle_socket(gw.clone(), router.clone(), stream, peer, permit);
                    gw.tracker.spawn(task);
                }
                Err(error) => {
                    // Out of file descriptors or a similar transient condition: back off.
                    tracing::warn!(%error, "accept failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
        drop(listener);
        let open = gw.registry.local_count();
        tracing::info!(open, "shutting down: closing every connection with 1001");
        gw.begin_shutdown();
        gw.tracker.close();
        if tokio::time::timeout(self.drain_timeout, gw.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = gw.registry.local_count(),
                "drain deadline passed; abandoning the connections still open"
            );
        }
        Ok(())
    }
}

/// Reads the first request of a connection and hands it to the WebSocket handshake or to HTTP.
async fn handle_socket(
    gw: Arc<Gateway>,
    router: Router,
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let timeout = Duration::from_secs(gw.limits.handshake_timeout_secs);
    let read = tokio::select! {
        read = tokio::time::timeout(timeout, handshake::read_head(&mut stream)) => read,
        _ = gw.shutdown.cancelled() => return,
    };
    let mut read = match read {
        Ok(Ok(read)) => read,
        Ok(Err(rejection)) => {
            let _ = stream.write_all(&rejection.to_http()).await;
            return;
        }
        Err(_) => {
            let rejection = handshake::Rejection::new(408, "Request timeout");
            let _ = stream.write_all(&rejection.to_http()).await;
            return;
        }
    };
    if is_upgrade(&read.head) {
        match handshake::accept(&gw, &read.head, read.version, peer, local.port(), "http").await {
            Ok(accepted) => {
                // Copy the (rare) bytes sent after the head so the head's buffer is freed.
                let leftover = if read.raw.len() > read.head_len {
                    BytesMut::from(&read.raw[read.head_len..])
                } else {
                    BytesMut::new()
                };
                drop(read);
                // The connection lives on in a task of its own: this task's future is sized
                // for the handshake and for HTTP (kilobytes), the connection's for a
                // connection, and an idle connection should cost no more than that.
                let task = gateway::serve(gw.clone(), accepted, stream, leftover, peer, true);
                gw.tracker.spawn(task.map(move |()| drop(permit)));
            }
            Err(rejection) => {
                let _ = stream.write_all(&rejection.to_http()).await;
            }
        }
        return;
    }
    let prefix = std::mem::take(&mut read.raw).freeze();
    drop(read);
    http::serve(
        gw,
        router,
        Prefixed::new(prefix, stream),
        ConnInfo { peer, local },
    )
    .await;
    drop(permit);
}

/// Pending connections the kernel queues for [`bind`]'s listener (capped by
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with a deep accept queue.
///
/// `TcpListener::bind` asks for a backlog of 128: a burst of connects larger than that
/// overflows the queue, and each dropped SYN costs its client a one-second retransmit.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `listener` with `config` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Server::new(config)?.serve(listener, shutdown).await
}
