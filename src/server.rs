//! The listener: accepting connections, telling handshakes from plain HTTP, shutting down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{Api, ApiError, keys};
use crate::apps::articles::ArticlesChat;
use crate::config::{BuiltinApp, Config, ConfigError};
use crate::event::ApiContext;
use crate::gateway::Gateway;
use crate::gateway::handshake::{self, is_upgrade};
use crate::gateway::registry::{LocalRegistry, Registry};
use crate::http::{self, ConnInfo, Prefixed};
use crate::integration::Integration;
use crate::integration::definition::BuiltinName;
use crate::integration::echo::Echo;
use crate::integration::lambda::Functions;
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
    /// The API's Lambda functions, started by `serve` and stopped after the drain.
    functions: Functions,
}

impl Server {
    /// Builds the gateway: the routes of the API definition (`config.api`), or else the
    /// configured built-in API, protected by the definition's authorizer if it has one.
    /// Lambda functions start with [`serve`](Self::serve).
    pub fn new(config: Config) -> Result<Self, Error> {
        let app = config.app;
        let prepared = config.api.prepare(&config.api_id)?;
        let functions = prepared.functions().clone();
        let mut server = Self::build(config, |management| {
            if prepared.has_routes() {
                let mut chat = None;
                return prepared
                    .into_api(|name, key| builtin_integration(name, key, &management, &mut chat));
            }
            let api = builtin_api(app, management)?;
            Ok(match prepared.authorizer() {
                Some(authorizer) => api.with_authorizer(authorizer),
                None => api,
            })
        })?;
        server.functions = functions;
        Ok(server)
    }

    /// Builds the gateway with an API of the caller's: `build` gets the management interface
    /// the API's integrations push through.
    pub fn with_api(
        config: Config,
        build: impl FnOnce(ManagementApi) -> Result<Api, ApiError>,
    ) -> Result<Self, Error> {
        Self::build(config, |management| Ok(build(management)?))
    }

    fn build(
        config: Config,
        build: impl FnOnce(ManagementApi) -> Result<Api, Error>,
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
            functions: Functions::default(),
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
        if !self.functions.is_empty() {
            let url = management_url(listener.local_addr()?, &gw.api_context.stage);
            if let Err(error) = self.functions.start(&url).await {
                self.functions.stop().await;
                return Err(error.into());
            }
        }
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
        // After the drain: `$disconnect` may need the functions.
        self.functions.stop().await;
        Ok(())
    }
}

/// The built-in API `app`.
fn builtin_api(app: BuiltinApp, management: ManagementApi) -> Result<Api, ApiError> {
    match app {
        BuiltinApp::Chat => chat_api(management),
        BuiltinApp::Echo => {
            Api::new(SelectionExpression::default()).route(keys::DEFAULT, Arc::new(Echo), true)
        }
    }
}

/// The built-in chat as an API; the only place that names the chat's implementation.
fn chat_api(management: ManagementApi) -> Result<Api, ApiError> {
    Arc::new(ArticlesChat::new(management)).api()
}

/// A route's built-in integration: `echo`, or the chat's handler for `key` (one chat per
/// server, shared by every route that names it; keys the chat lacks get its `$default`).
fn builtin_integration(
    name: BuiltinName,
    key: &str,
    management: &ManagementApi,
    chat: &mut Option<Api>,
) -> Result<Arc<dyn Integration>, Error> {
    match name {
        BuiltinName::Echo => Ok(Arc::new(Echo)),
        BuiltinName::Chat => {
            let chat = match chat {
                Some(chat) => chat,
                None => chat.insert(chat_api(management.clone())?),
            };
            let route = chat.get(key).or_else(|| chat.get(keys::DEFAULT));
            route.map(|r| r.integration.clone()).ok_or_else(|| {
                Error::Config(ConfigError::Invalid {
                    key: format!("routes.{key:?}.integration.name"),
                    reason: "the built-in chat has no handler for this route".into(),
                })
            })
        }
    }
}

/// The `@connections` endpoint as a process on this machine reaches it (handed to Lambda
/// functions): a wildcard listen address becomes loopback.
fn management_url(local: SocketAddr, stage: &str) -> String {
    let ip = match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}/{stage}", SocketAddr::new(ip, local.port()))
}

/// Reads the first request of a connection and hands it to the WebSocket handshake or to HTTP.
async fn handle_socket(
    gw: Arc<Gateway>,
    router: Router,
    mut stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
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
                gw.serve_accepted(accepted, stream, leftover, peer, true)
                    .await;
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
}

/// Serves `listener` with `config` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Server::new(config)?.serve(listener, shutdown).await
}
