//! The inspector over HTTP on the gateway's listener, everything under `/_switchboard/`:
//!
//! - `/_switchboard/` (and `app.js`, `style.css`): the page, compiled in;
//! - `GET api/connections` (with each connection's messages in and out), `GET api/routes`,
//!   `GET api/functions` (each Lambda function's execution environments), `GET api/stats`:
//!   JSON snapshots;
//! - `GET api/tables` (the embedded DynamoDB tables with their item counts) and
//!   `GET api/tables/{name}/items?limit=&start=` (a page of a table's items; `start` is the
//!   token the previous page ended with);
//! - `POST api/connections/{id}` (the body is posted) and `DELETE api/connections/{id}`:
//!   through the management API, as caller `inspector`; they need the header
//!   `X-Switchboard: 1`, which a cross-site form cannot send;
//! - `GET stream?connection=&route=&function=`: the event stream as Server-Sent Events, one
//!   JSON event per `data:` line, `{"type":"dropped","count":N}` when the subscriber fell
//!   behind; it starts with the comment `: subscribed`, after which no event is missed.
//!
//! Every request first passes [`Inspector::authorize`]: loopback callers only unless
//! management credentials are configured (then HTTP Basic with one of them); nothing at all
//! when the inspector is disabled.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::{Caller, Denied, Filter, Subscription};
use crate::api::keys;
use crate::dynamodb::DynamoDb;
use crate::dynamodb::browse::{self, BrowseError};
use crate::gateway::Gateway;
use crate::http::{ConnInfo, json_error};
use crate::ids::Id;
use crate::management::AwsError;

/// The path everything of the inspector lives under.
pub const PREFIX: &str = "/_switchboard";

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// How often an idle stream sends a comment, so a client that left is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Serves a request under [`PREFIX`]. `tables` is there when this node serves DynamoDB
/// tables.
pub async fn handle(
    State(gw): State<Arc<Gateway>>,
    tables: Option<Extension<Arc<DynamoDb>>>,
    request: Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnInfo>()
        .expect("every request carries its ConnInfo")
        .peer;
    let inspector = gw.management.inspector().clone();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(denied) = inspector.authorize(peer.ip(), authorization) {
        return refusal(denied);
    }
    let tables = tables.map(|Extension(tables)| tables);
    let path = request.uri().path().to_owned();
    let rest = path.strip_prefix(PREFIX).unwrap_or(&path);
    let method = request.method().clone();
    match (&method, rest) {
        (&Method::GET, "") => {
            let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/_switchboard/"));
            response
        }
        (&Method::GET, "/" | "/index.html") => asset("text/html; charset=utf-8", INDEX),
        (&Method::GET, "/app.js") => asset("text/javascript; charset=utf-8", SCRIPT),
        (&Method::GET, "/style.css") => asset("text/css; charset=utf-8", STYLE),
        (&Method::GET, "/api/connections") => json_response(connections(&gw)),
        (&Method::GET, "/api/routes") => json_response(routes(&gw)),
        (&Method::GET, "/api/functions") => json_response(functions(&gw)),
        (&Method::GET, "/api/stats") => json_response(stats(&gw)),
        (&Method::GET, "/api/tables") => table_list(tables.as_deref()).await,
        (&Method::GET, rest) if rest.starts_with("/api/tables/") => {
            let query = request.uri().query().unwrap_or("");
            table_items(tables.as_deref(), rest, query).await
        }
        (&Method::GET, "/stream") => {
            let filter = parse_filter(request.uri().query().unwrap_or(""));
            match inspector.subscribe(filter) {
                Some(subscription) => stream(&gw, subscription),
                None => refusal(Denied::Disabled),
            }
        }
        (_, rest) if rest.starts_with("/api/connections/") => {
            let raw = rest.trim_start_matches("/api/connections/");
            // Ids hold `=`, `+` and `/`: the page sends them percent-encoded.
            let id = percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned();
            manage(&gw, method, &id, request).await
        }
        _ => json_error(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// `connection=`, `route=`, `function=` from a query string; empty values filter nothing.
pub fn parse_filter(query: &str) -> Filter {
    let mut filter = Filter::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = Some(value.into_owned()).filter(|v| !v.is_empty());
        match &*key {
            "connection" => filter.connection = value,
            "route" => filter.route = value,
            "function" => filter.function = value,
            _ => {}
        }
    }
    filter
}

fn refusal(denied: Denied) -> Response {
    match denied {
        Denied::Disabled => json_error(StatusCode::NOT_FOUND, "Not found"),
        Denied::NotLoopback => json_error(StatusCode::FORBIDDEN, &denied.to_string()),
        Denied::Credentials => {
            let mut response = json_error(StatusCode::UNAUTHORIZED, &denied.to_string());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"switchboard inspector\""),
            );
            response
        }
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (
            header::CONTENT_SECURITY_POLICY,
            crate::apps::chat::ui::CONTENT_SECURITY_POLICY,
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn json_response(value: serde_json::Value) -> Response {
    let mut response = value.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// This node's connections.
fn connections(gw: &Gateway) -> serde_json::Value {
    let mut list: Vec<_> = gw
        .registry
        .local_connections()
        .into_iter()
        .map(|conn| {
            json!({
                "id": conn.id().to_string(),
                "source_ip": conn.context.source_ip.to_string(),
                "user_agent": conn.context.user_agent.as_deref(),
                "connected_at_ms": conn.context.connected_at_ms,
                "last_active_ms": conn.last_active_ms(),
                "queued_bytes": conn.queued_bytes(),
                "messages_in": conn.messages_in(),
                "messages_out": conn.messages_out(),
            })
        })
        .collect();
    list.sort_by_key(|c| c["connected_at_ms"].as_i64());
    json!({ "connections": list })
}

/// The routes with their counters and latency percentiles (milliseconds, the upper bound of
/// the histogram bucket holding them).
fn routes(gw: &Gateway) -> serde_json::Value {
    let ms = |s: Option<f64>| s.filter(|s| s.is_finite()).map(|s| s * 1000.0);
    let list: Vec<_> = gw
        .api
        .routes()
        .map(|route| {
            let m = &route.metrics;
            json!({
                "route": &*route.key,
                "function": route.integration.name(),
                "invocations": m.messages.load(std::sync::atomic::Ordering::Relaxed),
                "errors": m.errors.load(std::sync::atomic::Ordering::Relaxed),
                "p50_ms": ms(m.latency.quantile(0.5)),
                "p90_ms": ms(m.latency.quantile(0.9)),
                "p99_ms": ms(m.latency.quantile(0.99)),
            })
        })
        .collect();
    json!({
        "selection_expression": gw.api.selection().as_str(),
        "routes": list,
    })
}

/// Each Lambda function's execution environments: running (`environments`), past their init
/// and waiting (`idle`) or handling an invocation (`busy`), still in their init (`starting`),
/// and the cold starts, restarts and invocations so far.
fn functions(gw: &Gateway) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let functions = gw.metrics.functions.lock().expect("metrics lock").clone();
    let list: Vec<_> = functions
        .iter()
        .map(|f| {
            let environments = f.environments.load(Relaxed);
            json!({
                "function": f.name,
                "environments": environments,
                "idle": f.idle(),
                "busy": f.busy.load(Relaxed),
                "starting": environments.saturating_sub(f.warm.load(Relaxed)),
                "cold_starts": f.cold_starts.load(Relaxed),
                "restarts": f.restarts.load(Relaxed),
                "invocations": f.invocations.load(Relaxed),
            })
        })
        .collect();
    json!({ "functions": list })
}

/// The tables this node serves with their item counts; `enabled: false` (and no tables) when
/// it serves none.
async fn table_list(tables: Option<&DynamoDb>) -> Response {
    let Some(tables) = tables else {
        return json_response(json!({ "enabled": false, "tables": [] }));
    };
    match tables.table_summaries().await {
        Ok(list) => json_response(json!({ "enabled": true, "tables": list })),
        Err(e) => browse_error(&e),
    }
}

/// `/api/tables/{name}/items?limit=&start=`: one page of a table's items.
async fn table_items(tables: Option<&DynamoDb>, rest: &str, query: &str) -> Response {
    let Some(raw) = rest
        .strip_prefix("/api/tables/")
        .and_then(|r| r.strip_suffix("/items"))
    else {
        return json_error(StatusCode::NOT_FOUND, "Not found");
    };
    let Some(tables) = tables else {
        return json_error(
            StatusCode::NOT_FOUND,
            "this node serves no DynamoDB tables ([dynamodb] is off)",
        );
    };
    let name = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let mut limit = browse::DEFAULT_PAGE;
    let mut start = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "limit" => match value.parse() {
                Ok(n) if (1..=browse::MAX_PAGE).contains(&n) => limit = n,
                _ => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        &format!("limit must be a number from 1 to {}", browse::MAX_PAGE),
                    );
                }
            },
            "start" if !value.is_empty() => start = Some(value.into_owned()),
            _ => {}
        }
    }
    match tables.items_page(&name, limit, start.as_deref()).await {
        Ok(page) => json_response(json!(page)),
        Err(e) => browse_error(&e),
    }
}

fn browse_error(e: &BrowseError) -> Response {
    let status = match e {
        BrowseError::NoTable(_) => StatusCode::NOT_FOUND,
        BrowseError::BadToken(_) => StatusCode::BAD_REQUEST,
        BrowseError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        BrowseError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, &e.to_string())
}

/// Counters the page turns into rates.
fn stats(gw: &Gateway) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let mut invocations = 0;
    let mut messages = 0;
    for route in gw.api.routes() {
        let n = route.metrics.messages.load(Relaxed);
        invocations += n;
        if &*route.key != keys::CONNECT && &*route.key != keys::DISCONNECT {
            messages += n;
        }
    }
    let frames_in =
        messages + gw.metrics.unrouted.load(Relaxed) + gw.metrics.throttled.load(Relaxed);
    json!({
        "time_ms": crate::time::now_ms(),
        "open_connections": gw.registry.local_count(),
        "frames_in": frames_in,
        "deliveries": gw.metrics.frames_out.get(),
        "invocations": invocations,
    })
}

/// Posts to or deletes a connection through the management API.
async fn manage(gw: &Gateway, method: Method, id: &str, request: Request) -> Response {
    if !matches!(method, Method::POST | Method::DELETE) {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST or DELETE");
    }
    if request
        .headers()
        .get("x-switchboard")
        .is_none_or(|v| v.as_bytes() != b"1")
    {
        return json_error(
            StatusCode::FORBIDDEN,
            "the inspector's calls need the header X-Switchboard: 1",
        );
    }
    let Some(id) = Id::parse(id) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid connectionId: {id}"),
        );
    };
    let api = &gw.management;
    if method == Method::DELETE {
        return match api.delete_as(Caller::Inspector, &id).resolve().await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => AwsError::from(e).into_response(),
        };
    }
    let limit = api.max_payload();
    let Ok(body) = axum::body::to_bytes(request.into_body(), limit + 1).await else {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "the payload is too large");
    };
    match api.post_as(Caller::Inspector, &id, &body).resolve().await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => AwsError::from(e).into_response(),
    }
}

/// The subscription as Server-Sent Events, until the client leaves or the server shuts down.
fn stream(gw: &Gateway, subscription: Subscription) -> Response {
    let shutdown = gw.shutdown.clone();
    let first = Bytes::from_static(b": subscribed\n\n");
    let state = (subscription, shutdown, Some(first));
    let body = futures_util::stream::unfold(state, |(mut sub, shutdown, first)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), (sub, shutdown, None)));
        }
        let item = tokio::select! {
            _ = shutdown.cancelled() => return None,
            item = tokio::time::timeout(KEEP_ALIVE, sub.next()) => item,
        };
        let chunk = match item {
            Ok(Some(item)) => Bytes::from(format!("data: {}\n\n", item.json())),
            Ok(None) => return None,
            Err(_) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok(chunk), (sub, shutdown, None)))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
