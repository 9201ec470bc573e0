//! Plain HTTP on the gateway's listener: health, the management API, and the answers for the
//! stage path when it is not a WebSocket handshake.
//!
//! Served by hyper with an axum router. The first request of a connection has already been
//! read by the front door ([`crate::server`]); [`Prefixed`] replays it to hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::Either;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

use crate::dynamodb::{self, DynamoDb};
use crate::event::RequestHead;
use crate::gateway::Gateway;
use crate::gateway::handshake::{self, Rejection, is_upgrade};
use crate::inspector;
use crate::management::{self, AwsError, Target};

/// The addresses of the TCP connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// The listener's port.
    pub local_port: u16,
    /// `http` or `https`.
    pub proto: &'static str,
}

/// The router for everything that is not a WebSocket handshake on a fresh connection.
/// DynamoDB calls (`POST /` with a DynamoDB `X-Amz-Target`) are served when the router
/// carries an `Extension<Arc<DynamoDb>>` layer.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(chat_ui).post(dynamodb_call))
        .route("/ui/{file}", get(chat_ui))
        .route("/_switchboard", any(inspector::http::handle))
        .route("/_switchboard/", any(inspector::http::handle))
        .route("/_switchboard/{*rest}", any(inspector::http::handle))
        .fallback(dispatch)
        .with_state(gateway)
}

/// 200 when serving with every backend reachable; 503 while draining or when a backend the
/// node needs (the cluster's Redis) is unreachable.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.shutdown.is_cancelled() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !gw.registry.is_ready() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "a backend is unreachable");
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(
    State(gw): State<Arc<Gateway>>,
    tables: Option<Extension<Arc<DynamoDb>>>,
) -> Response {
    let cluster_up = gw.registry.is_clustered().then(|| gw.registry.is_ready());
    let mut body = gw.metrics.render(
        gw.registry.local_count(),
        gw.api.routes().map(|r| (&*r.key, &r.metrics)),
        cluster_up,
    );
    if let Some(Extension(tables)) = tables {
        tables.render_metrics(&mut body).await;
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `POST /`: a DynamoDB call when DynamoDB is served and the target names one; otherwise
/// what `POST /` always was (405).
async fn dynamodb_call(tables: Option<Extension<Arc<DynamoDb>>>, request: Request) -> Response {
    match tables {
        Some(Extension(tables)) if dynamodb::is_dynamodb_call(request.headers()) => {
            let info = *request
                .extensions()
                .get::<ConnInfo>()
                .expect("every request carries its ConnInfo");
            tables.handle(info.peer, request).await
        }
        _ => {
            let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
            response
        }
    }
}

async fn dispatch(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let info = *request
        .extensions()
        .get::<ConnInfo>()
        .expect("every request carries its ConnInfo");
    match management::parse_path(request.uri().path(), &gw.api_context.stage) {
        Target::Stage if is_upgrade(&head_of(&request)) => upgrade(gw, info, request).await,
        Target::Stage => {
            let mut response = json_error(
                StatusCode::UPGRADE_REQUIRED,
                "This is a WebSocket endpoint: connect with a WebSocket client",
            );
            response
                .headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            response
        }
        Target::Connection(id) => management::handle(&gw.management, id, info.peer, request).await,
        Target::WrongStage => AwsError::forbidden("Forbidden").into_response(),
        Target::Other => json_error(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// The chat's browser UI, served when the API is the chat's (it has a `join` route).
async fn chat_ui(state: State<Arc<Gateway>>, request: Request) -> Response {
    let gw = &state.0;
    let asset = crate::apps::chat::ui::asset(request.uri().path(), &gw.api_context.stage);
    match asset {
        Some(asset) if gw.api.get("join").is_some() => asset.into_response(),
        _ => dispatch(state, request).await,
    }
}

/// A JSON `{"message": ...}` response.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn head_of(request: &Request) -> RequestHead {
    RequestHead {
        method: request.method().as_str().to_owned(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers: request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    }
}

/// A WebSocket handshake that arrived on a kept-alive HTTP connection. Header names reach
/// `$connect` lower-cased here (hyper does not keep their casing); fresh connections, which
/// is what WebSocket clients open, keep it.
async fn upgrade(gw: Arc<Gateway>, info: ConnInfo, mut request: Request) -> Response {
    let head = head_of(&request);
    let accepted =
        match handshake::accept(&gw, &head, 1, info.peer, info.local_port, info.proto).await {
            Ok(accepted) => accepted,
            Err(rejection) => {
                gw.metrics.rejected(rejection.status);
                return rejection_response(&rejection);
            }
        };
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, &accepted.accept_key);
    if let Some(protocol) = &accepted.protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let gateway = gw.clone();
    gw.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                gateway
                    .serve_accepted(accepted, TokioIo::new(upgraded), BytesMut::new(), info.peer)
                    .await
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
    response.body(Body::empty()).expect("valid response")
}

fn rejection_response(rejection: &Rejection) -> Response {
    let status = StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = match &rejection.message {
        Some(message) => json_error(status, message),
        None => status.into_response(),
    };
    for (k, v) in &rejection.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            response.headers_mut().insert(*k, v);
        }
    }
    response
}

/// Serves HTTP/1.1 on a connection until the client or shutdown ends it.
pub(crate) async fn serve<S>(gw: Arc<Gateway>, router: Router, io: S, info: ConnInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let gateway = gw.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            // The management API's hot path (a handler's postToConnection, once per
            // recipient) goes to its handler at once; `dispatch` would send it there too,
            // after the router's matching.
            let stage = &gateway.api_context.stage;
            if let Target::Connection(id) = management::parse_path(request.uri().path(), stage) {
                let gateway = gateway.clone();
                return Either::Left(async move {
                    let request = request.map(Body::new);
                    Ok::<_, Infallible>(
                        management::handle(&gateway.management, id, info.peer, request).await,
                    )
                });
            }
            request.extensions_mut().insert(info);
            Either::Right(router.clone().oneshot(request.map(Body::new)))
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "http connection ended with an error");
            }
        }
        _ = gw.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, preceded by `prefix`.
    pub(crate) fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
