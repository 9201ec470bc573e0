//! The listener: accepting connections, telling handshakes from plain HTTP, shutting down.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, keys};
use crate::apps::chat::cluster::{ClusterPresence, RedisChatStore, connect_chat};
use crate::apps::chat::sqlite::SqliteStore;
use crate::apps::chat::store::StoreError;
use crate::apps::chat::{Chat, ChatConfig};
use crate::cluster::{ClusterError, ClusterRegistry};
use crate::config::{BuiltinApp, Config, ConfigError, DynamoDbConfig};
use crate::dynamodb::{self, DynamoDb, DynamoError};
use crate::event::ApiContext;
use crate::gateway::handshake::{self, is_upgrade};
use crate::gateway::registry::{LocalRegistry, Registry};
use crate::gateway::{self, Gateway};
use crate::http::{self, ConnInfo, Prefixed};
use crate::inspector::Inspector;
use crate::integration::Integration;
use crate::integration::definition::BuiltinName;
use crate::integration::echo::Echo;
use crate::integration::lambda::Functions;
use crate::integration::lambda::process::ManagementEndpoint;
use crate::limits::{Admission, Admitted, Refusal};
use crate::management::ManagementApi;
use crate::metrics::Metrics;
use crate::selection::SelectionExpression;
use crate::sigv4::Credential;
use crate::tls::{LocalCa, TlsError, TlsFiles};
use crate::workers::{Lanes, Workers};

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
    /// The DynamoDB tables cannot be served.
    #[error(transparent)]
    DynamoDb(#[from] DynamoError),
}

/// A configured server, ready to serve a listener.
pub struct Server {
    gateway: Arc<Gateway>,
    drain_timeout: Duration,
    tls: Option<TlsAcceptor>,
    /// The management API's key pairs; functions sign with the first.
    management_credentials: Vec<Credential>,
    cluster: Option<Arc<ClusterRegistry>>,
    /// The built-in chat, closed after the connections have drained.
    chat: Option<Arc<Chat>>,
    /// The API's Lambda functions, started by `serve` and stopped after the drain.
    functions: Functions,
    /// The embedded DynamoDB tables, stopped after the functions.
    dynamodb: Option<Arc<DynamoDb>>,
    /// Where functions find DynamoDB.
    dynamodb_config: DynamoDbConfig,
    /// The local certificate authority, when managed functions run and no TLS is configured:
    /// the listener then answers both plain and TLS connections (told apart by their first
    /// byte), and functions trust the authority.
    local_ca: Option<Arc<LocalCa>>,
    /// With worker threads (`workers` > 0): the lanes the management API hands them posts on.
    lanes: Option<Arc<Lanes>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("gateway", &self.gateway)
            .field("tls", &self.tls.is_some())
            .field("cluster", &self.cluster)
            .field("chat", &self.chat.is_some())
            .field("functions", &!self.functions.is_empty())
            .field("dynamodb", &self.dynamodb.is_some())
            .finish()
    }
}

impl Server {
    /// Builds the gateway: the routes of the API definition (`config.api`), or else the
    /// configured built-in API, protected by the definition's authorizer if it has one.
    /// Lambda functions start with [`serve`](Self::serve).
    pub fn new(config: Config) -> Result<Self, Error> {
        let app = config.app;
        let prepared = config
            .api
            .prepare(&config.api_id)
            .map_err(ConfigError::from)?;
        let mut functions = prepared.functions().clone();
        functions.set_data_dir(config.data_dir.clone());
        let data_dir = config.data_dir.clone();
        let options = ChatOptions {
            chat: config.chat.clone(),
            data_dir: config.data_dir.clone(),
        };
        let mut chat: Option<Arc<Chat>> = None;
        let mut server = Self::build(config, |management, cluster| {
            // The chat starts (and opens its storage) only if something uses it.
            let mut start_chat = || -> Result<Arc<Chat>, Error> {
                if let Some(chat) = &chat {
                    return Ok(chat.clone());
                }
                let started = options.start(management.clone(), cluster)?;
                chat = Some(started.clone());
                Ok(started)
            };
            if prepared.has_routes() {
                return prepared
                    .into_api(|name, key| builtin_integration(name, key, &mut start_chat));
            }
            let api = match app {
                BuiltinApp::Chat => start_chat()?.api()?,
                BuiltinApp::Echo => echo_api()?,
            };
            Ok(match prepared.authorizer() {
                Some(authorizer) => api.with_authorizer(authorizer),
                None => api,
            })
        })?;
        if server.tls.is_none() && server_needs_local_ca(&functions) {
            let ca = Arc::new(LocalCa::open(&data_dir.join("tls"))?);
            server.tls = Some(ca.clone().acceptor()?);
            server.local_ca = Some(ca);
        }
        server.functions = functions;
        server.chat = chat;
        Ok(server)
    }

    /// Builds the gateway with an API of the caller's: `build` gets the management interface
    /// the API's integrations push through.
    pub fn with_api(
        config: Config,
        build: impl FnOnce(ManagementApi) -> Result<Api, ApiError>,
    ) -> Result<Self, Error> {
        Self::build(config, |management, _| Ok(build(management)?))
    }

    fn build(
        config: Config,
        build: impl FnOnce(ManagementApi, Option<&Arc<ClusterRegistry>>) -> Result<Api, Error>,
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
        let metrics = Arc::new(Metrics::default());
        let lanes = (config.workers > 0).then(|| Arc::new(Lanes::new(config.workers)));
        let mut management = ManagementApi::new(registry.clone(), config.limits.max_message_bytes)
            .with_credentials(config.management_credentials.clone())
            .counting_into(metrics.clone())
            .inspected_by(Arc::new(Inspector::new(
                config.inspector.enabled,
                config.management_credentials.clone(),
            )));
        if let Some(lanes) = &lanes {
            management = management.with_lanes(lanes.clone());
        }
        let api = build(management.clone(), cluster.as_ref())?;
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
            metrics,
        );
        let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
        // Declared tables exist before the server listens.
        let dynamodb = DynamoDb::start(
            &config.dynamodb,
            &config.data_dir,
            config.management_credentials.clone(),
        )?;
        Ok(Server {
            gateway: Arc::new(gateway),
            drain_timeout: config.drain_timeout,
            tls,
            management_credentials: config.management_credentials.clone(),
            cluster,
            chat: None,
            functions: Functions::default(),
            dynamodb,
            dynamodb_config: config.dynamodb.clone(),
            local_ca: None,
            lanes,
        })
    }

    /// The gateway's shared state.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The embedded DynamoDB tables, when this server keeps them.
    pub fn dynamodb(&self) -> Option<&Arc<DynamoDb>> {
        self.dynamodb.as_ref()
    }

    /// Serves `listener` until `shutdown` completes, then drains: every connection is closed
    /// with 1001 and gets its `$disconnect`, within the drain deadline.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let gw = self.gateway;
        if !self.functions.is_empty() {
            let local = listener.local_addr()?;
            let tls_only = self.tls.is_some() && self.local_ca.is_none();
            let gateway_url = gateway_url(local, tls_only);
            let management = ManagementEndpoint {
                url: format!("{gateway_url}/{}", gw.api_context.stage),
                credential: self.management_credentials.first().cloned(),
                dynamodb_url: dynamodb::endpoint_for_functions(&self.dynamodb_config, &gateway_url),
                ca_bundle: self.local_ca.as_ref().map(|ca| ca.bundle_path().to_owned()),
                redirect: self
                    .local_ca
                    .as_ref()
                    .map(|_| self::gateway_url(local, false)),
                inspector: Some(gw.management.inspector().clone()),
            };
            *gw.metrics.functions.lock().expect("metrics lock") = self.functions.metrics();
            if let Err(error) = self.functions.start(management).await {
                self.functions.stop().await;
                return Err(error.into());
            }
        }
        let router = match &self.dynamodb {
            Some(tables) => http::router(gw.clone()).layer(axum::Extension(tables.clone())),
            None => http::router(gw.clone()),
        };
        let sweeper = gw.clone();
        gw.tracker.spawn(async move { sweeper.sweep().await });
        if let Some(cluster) = &self.cluster {
            if let Some(chat) = &self.chat {
                // Before the registry runs: it subscribes to the chat's channel when it starts.
                connect_chat(
                    chat.clone(),
                    cluster.clone(),
                    cluster.key_prefix(),
                    cluster.events(),
                );
            }
            let run = cluster.clone().run(gw.shutdown.clone(), self.drain_timeout);
            gw.tracker.spawn(run);
        }
        let acceptor = Arc::new(Acceptor::new(
            gw.clone(),
            router,
            self.tls.clone(),
            self.local_ca.is_some(),
        ));
        let workers = self.lanes.as_ref().map_or(0, |lanes| lanes.workers());
        // The shared runtime's threads: with workers it only runs background work.
        let shared_threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(address = %listener.local_addr()?, stage = %gw.api_context.stage, workers, shared_threads, "listening");
        let workers = match &self.lanes {
            None => {
                acceptor.accept_until(&listener, shutdown).await;
                drop(listener);
                None
            }
            Some(lanes) => {
                // Each worker accepts from its own handle on the listener.
                let listening = CancellationToken::new();
                let stop = listening.clone();
                let workers = Workers::start(
                    lanes.clone(),
                    listener.into_std()?,
                    gw.management.clone(),
                    move |listener| {
                        let (acceptor, stop) = (acceptor.clone(), stop.clone());
                        async move { acceptor.accept_until(&listener, stop.cancelled()).await }
                    },
                )?;
                shutdown.await;
                listening.cancel();
                Some(workers)
            }
        };
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
        // After the drain: `$disconnect` may need the functions.
        self.functions.stop().await;
        if let Some(chat) = &self.chat {
            chat.close().await;
        }
        // After the chat: its last posts go through the workers.
        if let Some(workers) = workers {
            workers.stop().await;
        }
        // After the functions: `$disconnect` handlers delete their connection's item.
        if let Some(tables) = &self.dynamodb {
            tables.stop().await;
        }
        Ok(())
    }
}

/// What accepting a connection needs; shared by the worker threads.
struct Acceptor {
    gw: Arc<Gateway>,
    router: Router,
    tls: Option<TlsAcceptor>,
    /// TLS and plain HTTP share the listener, told apart by the first byte.
    sniff: bool,
    limit: Arc<Semaphore>,
    admission: Arc<Admission>,
}

impl Acceptor {
    fn new(gw: Arc<Gateway>, router: Router, tls: Option<TlsAcceptor>, sniff: bool) -> Self {
        Acceptor {
            limit: Arc::new(Semaphore::new(connection_limit(gw.limits.max_connections))),
            admission: Admission::new(
                gw.limits.max_connections_per_ip,
                gw.limits.max_new_connections_per_sec,
            ),
            gw,
            router,
            tls,
            sniff,
        }
    }

    /// Accepts connections from `listener` until `stop` completes, each served by a task of
    /// its own on the current runtime.
    async fn accept_until(&self, listener: &TcpListener, stop: impl Future<Output = ()>) {
        // Read once here, not from each connection's socket (a system call per connection).
        let local_port = listener.local_addr().map_or(0, |local| local.port());
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut stop => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => self.accepted(stream, (peer, local_port)),
                Err(error) => {
                    // Out of file descriptors or a similar transient condition: back off.
                    tracing::warn!(%error, "accept failed");
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    fn accepted(&self, stream: TcpStream, (peer, local_port): (SocketAddr, u16)) {
        let gw = &self.gw;
        let admitted = match self.limit.clone().try_acquire_owned() {
            Err(_) => Err((503, "The server is at its connection limit")),
            Ok(permit) => self
                .admission
                .admit(peer.ip())
                .map(|admitted| (permit, admitted))
                .map_err(Refusal::answer),
        };
        match admitted {
            Ok(places) => {
                gw.tracker
                    .spawn(self.connection_task(stream, (peer, local_port), places));
            }
            Err((status, message)) => {
                gw.metrics.rejected(status);
                tracing::debug!(%peer, status, message, "connection refused");
                // When plain and TLS share the listener, a refusal is plain.
                let tls = self.tls.clone().filter(|_| !self.sniff);
                gw.tracker
                    .spawn(refuse(gw.clone(), tls, stream, status, message));
            }
        }
    }

    /// The task that serves an admitted connection: its handshake or HTTP requests, up to
    /// the WebSocket connection's own task.
    fn connection_task(
        &self,
        stream: TcpStream,
        addresses: (SocketAddr, u16),
        places: Places,
    ) -> impl Future<Output = ()> + Send + 'static {
        handle_socket(
            self.gw.clone(),
            self.router.clone(),
            (self.tls.clone(), self.sniff),
            stream,
            addresses,
            places,
        )
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
/// The built-in echo API: a two-way `$default` that sends every message back.
fn echo_api() -> Result<Api, ApiError> {
    Api::new(SelectionExpression::default()).route(keys::DEFAULT, Arc::new(Echo), true)
}

/// How the built-in chat is set up: history in SQLite on one node, in Redis in a cluster.
struct ChatOptions {
    chat: ChatConfig,
    data_dir: PathBuf,
}

impl ChatOptions {
    fn start(
        &self,
        management: ManagementApi,
        registry: Option<&Arc<ClusterRegistry>>,
    ) -> Result<Arc<Chat>, Error> {
        let retention = self.chat.retention();
        Ok(match registry {
            Some(registry) => {
                let prefix = registry.key_prefix();
                let store = RedisChatStore::open(registry.redis_url(), prefix, retention)?;
                let presence = ClusterPresence::new(
                    registry.node_id(),
                    prefix,
                    registry.clone(),
                    management.clone(),
                );
                Chat::start_with(
                    Box::new(store),
                    Arc::new(presence),
                    self.chat.clone(),
                    management,
                )
            }
            None => {
                let store = SqliteStore::open(&self.data_dir, retention, self.chat.synchronous)?;
                Chat::start(Box::new(store), self.chat.clone(), management)
            }
        })
    }
}

/// A route's built-in integration: `echo`, or the chat (one per server, shared by every
/// route that names it). The chat answers route keys it does not know like its `$default`.
fn builtin_integration(
    name: BuiltinName,
    key: &str,
    start_chat: &mut dyn FnMut() -> Result<Arc<Chat>, Error>,
) -> Result<Arc<dyn Integration>, Error> {
    match name {
        BuiltinName::Echo => Ok(Arc::new(Echo)),
        BuiltinName::Chat => {
            let chat = start_chat()?;
            if chat.api()?.get(key).is_some() {
                Ok(chat)
            } else {
                Ok(Arc::new(AsDefault(chat)))
            }
        }
    }
}

/// Hands an integration its events as if they came through `$default`.
struct AsDefault(Arc<Chat>);

impl Integration for AsDefault {
    fn invoke(&self, event: &crate::event::Event<'_>) -> crate::integration::Invocation {
        self.0.invoke(&crate::event::Event {
            route_key: keys::DEFAULT,
            ..*event
        })
    }

    fn name(&self) -> &str {
        self.0.name()
    }
}

/// Whether the API runs managed functions (Node.js, Python), whose AWS calls the local CA
/// serves.
fn server_needs_local_ca(functions: &Functions) -> bool {
    functions.has_managed()
}

/// The gateway as a process on this machine reaches it (handed to Lambda functions for
/// `@connections` and DynamoDB): a wildcard listen address becomes loopback.
fn gateway_url(local: SocketAddr, tls: bool) -> String {
    let ip = match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, local.port()))
}

/// Reads the first request of a connection and hands it to the WebSocket handshake or to HTTP.
async fn handle_socket(
    gw: Arc<Gateway>,
    router: Router,
    (tls, sniff): (Option<TlsAcceptor>, bool),
    stream: TcpStream,
    (peer, local_port): (SocketAddr, u16),
    places: Places,
) {
    let _ = stream.set_nodelay(true);
    let timeout = Duration::from_secs(gw.limits.handshake_timeout_secs);
    // With the local CA, TLS and plain HTTP share the listener: a TLS connection starts with
    // a handshake record (0x16), an HTTP request with a letter.
    let tls = match tls {
        Some(acceptor) if sniff => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
                Ok(Ok(1)) if crate::tls::is_tls_start(first[0]) => Some(acceptor),
                Ok(Ok(1)) => None,
                _ => return,
            }
        }
        other => other,
    };
    let Some(acceptor) = tls else {
        return serve_stream(
            gw,
            router,
            stream,
            ConnInfo {
                peer,
                local_port,
                proto: "http",
            },
            places,
        )
        .await;
    };
    // Boxed: a TLS stream's state is kilobytes, and this future would otherwise be sized (and
    // copied at spawn and at its end) for it on every plain connection too.
    Box::pin(serve_tls(
        gw,
        router,
        acceptor,
        stream,
        (peer, local_port),
        places,
    ))
    .await
}

/// Serves a connection whose first byte began a TLS handshake.
async fn serve_tls(
    gw: Arc<Gateway>,
    router: Router,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    (peer, local_port): (SocketAddr, u16),
    places: Places,
) {
    let timeout = Duration::from_secs(gw.limits.handshake_timeout_secs);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            serve_stream(
                gw,
                router,
                stream,
                ConnInfo {
                    peer,
                    local_port,
                    proto: "https",
                },
                places,
            )
            .await
        }
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Serves one connection, plain or TLS, from its first request on. `places` are held until
/// the connection ends.
async fn serve_stream<S>(
    gw: Arc<Gateway>,
    router: Router,
    mut stream: S,
    info: ConnInfo,
    places: Places,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnInfo {
        peer,
        local_port,
        proto,
    } = info;
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
        match handshake::accept(&gw, &read.head, read.version, peer, local_port, proto).await {
            Ok(accepted) => {
                if stream.write_all(&accepted.response()).await.is_err() {
                    tracing::debug!(%peer, "client left before the 101 was written");
                    return;
                }
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
                let task = gateway::serve(gw.clone(), accepted.conn, stream, leftover, peer);
                gw.tracker.spawn(task.map(move |()| drop(places)));
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
    // Boxed: hyper's connection would add half a kilobyte to every WebSocket handshake's task.
    Box::pin(http::serve(gw, router, Prefixed::new(prefix, stream), info)).await;
    drop(places);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's first task is spawned (its future copied to the heap) and ended (copied
    /// again) on every connect: the rare paths it can take (TLS, HTTP, an authorizer) are
    /// boxed so that the common one, a plain WebSocket handshake, stays small. It was 8 KB
    /// before they were, and those copies were 6 % of a connect's CPU in a profile.
    #[tokio::test]
    async fn the_task_that_serves_a_new_connection_stays_small() {
        let config = Config {
            app: BuiltinApp::Echo,
            ..Config::default()
        };
        let gw = Server::new(config).unwrap().gateway;
        let acceptor = Acceptor::new(gw.clone(), http::router(gw), None, false);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let _client = TcpStream::connect(local).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let places = (
            acceptor.limit.clone().try_acquire_owned().unwrap(),
            acceptor.admission.admit(peer.ip()).unwrap(),
        );
        let task = acceptor.connection_task(stream, (peer, local.port()), places);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1792, "the connection's first task is {size} bytes");
    }
}
