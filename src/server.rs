//! The listener: accepting connections, telling handshakes from plain HTTP, shutting down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::api::{Api, ApiError};
use crate::apps::chat::Chat;
use crate::apps::chat::sqlite::SqliteStore;
use crate::apps::chat::store::{ChatStore, StoreError};
use crate::cluster::chat::{ClusterPresence, RedisChatStore, connect_chat};
use crate::cluster::{ClusterError, ClusterRegistry};
use crate::config::{BuiltinApp, Config, ConfigError};
use crate::event::ApiContext;
use crate::gateway::Gateway;
use crate::gateway::handshake::{self, is_upgrade};
use crate::gateway::registry::{LocalRegistry, Registry};
use crate::http::{self, ConnInfo, Prefixed};
use crate::integration::echo::Echo;
use crate::limits::{Admission, Admitted, Refusal};
use crate::management::ManagementApi;
use crate::selection::SelectionExpression;
use crate::tls::{TlsError, TlsFiles};

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
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The cluster configuration is unusable.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The chat's storage cannot be opened.
    #[error(transparent)]
    Chat(#[from] StoreError),
}

/// A configured server, ready to serve a listener.
pub struct Server {
    gateway: Arc<Gateway>,
    drain_timeout: Duration,
    tls: Option<TlsAcceptor>,
    cluster: Option<Arc<ClusterRegistry>>,
    /// The built-in chat, closed after the connections have drained.
    chat: Option<Arc<Chat>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("gateway", &self.gateway)
            .field("tls", &self.tls.is_some())
            .field("cluster", &self.cluster)
            .field("chat", &self.chat.is_some())
            .finish()
    }
}

impl Server {
    /// Builds the gateway with the configured built-in API.
    pub fn new(config: Config) -> Result<Self, Error> {
        match config.app {
            BuiltinApp::Chat => {
                config.validate()?;
                let chat_config = config.chat.clone();
                let retention = chat_config.retention();
                // On one node the history is in SQLite; in a cluster, in the shared Redis.
                let cluster = config.cluster.clone();
                let store: Box<dyn ChatStore> = match &cluster {
                    Some(c) => Box::new(RedisChatStore::open(
                        &c.redis_url,
                        &c.key_prefix,
                        retention,
                    )?),
                    None => Box::new(SqliteStore::open(
                        &config.data_dir,
                        retention,
                        config.chat.synchronous,
                    )?),
                };
                let mut chat = None;
                let mut server = Self::with_api(config, |management| {
                    let app = match &cluster {
                        Some(c) => {
                            let presence = ClusterPresence::new(
                                &c.redis_url,
                                &c.key_prefix,
                                &c.node_id,
                                management.clone(),
                            )
                            .map_err(|e| ApiError::Backend(e.to_string()))?;
                            Chat::start_with(store, Arc::new(presence), chat_config, management)
                        }
                        None => Chat::start(store, chat_config, management),
                    };
                    chat = Some(app.clone());
                    app.api()
                })?;
                server.chat = chat;
                Ok(server)
            }
            BuiltinApp::Echo => Self::with_api(config, |_| {
                Api::new(SelectionExpression::default()).route(
                    crate::api::keys::DEFAULT,
                    Arc::new(Echo),
                    true,
                )
            }),
        }
    }

    /// Builds the gateway with an API of the caller's: `build` gets the management interface
    /// the API's integrations push through.
    pub fn with_api(
        config: Config,
        build: impl FnOnce(ManagementApi) -> Result<Api, ApiError>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let cluster = config
            .cluster
            .clone()
            .map(ClusterRegistry::new)
            .transpose()?;
        let registry: Arc<dyn Registry> = match &cluster {
            Some(cluster) => cluster.clone(),
            None => Arc::new(LocalRegistry::new()),
        };
        let management = ManagementApi::new(registry.clone(), config.limits.max_message_bytes)
            .with_credentials(config.management_credentials.clone());
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
        let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
        Ok(Server {
            gateway: Arc::new(gateway),
            drain_timeout: config.drain_timeout,
            tls,
            cluster,
            chat: None,
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
        if let Some(cluster) = &self.cluster {
            if let Some(chat) = &self.chat {
                // Before the registry runs: it subscribes to the chat's channel when it starts.
                connect_chat(cluster, chat.clone(), cluster.key_prefix());
            }
            let run = cluster.clone().run(gw.shutdown.clone(), self.drain_timeout);
            gw.tracker.spawn(run);
        }
        let limit = Arc::new(Semaphore::new(connection_limit(gw.limits.max_connections)));
        let admission = Admission::new(
            gw.limits.max_connections_per_ip,
            gw.limits.max_new_connections_per_sec,
        );
        tracing::info!(address = %listener.local_addr()?, stage = %gw.api_context.stage, "listening");
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let tls = self.tls.clone();
                    let admitted = match limit.clone().try_acquire_owned() {
                        Err(_) => Err((503, "The server is at its connection limit")),
                        Ok(permit) => admission
                            .admit(peer.ip())
                            .map(|admitted| (permit, admitted))
                            .map_err(Refusal::answer),
                    };
                    match admitted {
                        Ok(places) => {
                            let task = handle_socket(
                                gw.clone(),
                                router.clone(),
                                tls,
                                stream,
                                peer,
                                places,
                            );
                            gw.tracker.spawn(task);
                        }
                        Err((status, message)) => {
                            gw.metrics.rejected(status);
                            tracing::debug!(%peer, status, message, "connection refused");
                            gw.tracker
                                .spawn(refuse(gw.clone(), tls, stream, status, message));
                        }
                    }
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
        if let Some(chat) = &self.chat {
            chat.close().await;
        }
        Ok(())
    }
}

/// The connection limit actually enforced: the configured one, or less when the process may
/// not open that many files (each connection is one).
fn connection_limit(configured: usize) -> usize {
    let Some(files) = open_file_limit() else {
        return configured;
    };
    // Leave room for the listener, log files, the data store and outgoing HTTP.
    let usable = files.saturating_sub(64).max(1);
    if configured > usable {
        tracing::warn!(
            configured,
            open_file_limit = files,
            enforced = usable,
            "max_connections is above what this process may open; enforcing the lower limit"
        );
        return usable;
    }
    configured
}

/// The soft limit on open files, from `/proc/self/limits` (Linux).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Answers a connection turned away before its request was read, then closes it.
async fn refuse(
    gw: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    status: u16,
    message: &'static str,
) {
    let mut rejection = handshake::Rejection::new(status, message);
    rejection.headers.push(("Retry-After", "1".into()));
    let response = rejection.to_http();
    let timeout = Duration::from_secs(gw.limits.handshake_timeout_secs);
    let _ = tokio::time::timeout(timeout, async {
        match tls {
            None => {
                let mut stream = stream;
                let _ = stream.write_all(&response).await;
            }
            Some(acceptor) => {
                if let Ok(mut stream) = acceptor.accept(stream).await {
                    let _ = stream.write_all(&response).await;
                    let _ = stream.shutdown().await;
                }
            }
        }
    })
    .await;
}

/// A connection's places in the global and per-address counts, held while it is open.
type Places = (OwnedSemaphorePermit, Admitted);

/// Reads the first request of a connection and hands it to the WebSocket handshake or to HTTP.
async fn handle_socket(
    gw: Arc<Gateway>,
    router: Router,
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    _places: Places,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_stream(
            gw,
            router,
            stream,
            ConnInfo {
                peer,
                local,
                proto: "http",
            },
        )
        .await;
    };
    let timeout = Duration::from_secs(gw.limits.handshake_timeout_secs);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            serve_stream(
                gw,
                router,
                stream,
                ConnInfo {
                    peer,
                    local,
                    proto: "https",
                },
            )
            .await
        }
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Serves one connection, plain or TLS, from its first request on.
async fn serve_stream<S>(gw: Arc<Gateway>, router: Router, mut stream: S, info: ConnInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnInfo { peer, local, proto } = info;
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
        match handshake::accept(&gw, &read.head, read.version, peer, local.port(), proto).await {
            Ok(accepted) => {
                // Copy the (rare) bytes sent after the head so the head's buffer is freed.
                let leftover = if read.raw.len() > read.head_len {
                    BytesMut::from(&read.raw[read.head_len..])
                } else {
                    BytesMut::new()
                };
                drop(read);
                gw.serve_accepted(accepted, stream, leftover, peer, true)
                    .await;
            }
            Err(rejection) => {
                gw.metrics.rejected(rejection.status);
                let _ = stream.write_all(&rejection.to_http()).await;
            }
        }
        return;
    }
    let prefix = std::mem::take(&mut read.raw).freeze();
    drop(read);
    http::serve(gw, router, Prefixed::new(prefix, stream), info).await;
}

/// Serves `listener` with `config` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Server::new(config)?.serve(listener, shutdown).await
}
