//! The inspector: a live stream of what happens in the gateway (connections opened and closed,
//! frames in, route decisions, integration calls, `@connections` calls, function log lines),
//! for the page at `/_switchboard/` and `switchboard tail`.
//!
//! It costs nothing when nobody looks: every hook first loads one relaxed atomic (how many
//! subscribers there are) and, when it is zero, returns without building, formatting or
//! serialising anything. With subscribers, each event is serialised once into JSON and put on
//! one bounded `tokio::sync::broadcast` channel ([`CAPACITY`] events); a subscriber that falls
//! behind loses the oldest events and is told how many with a `dropped` marker, so nothing is
//! ever queued without bound. Texts (frames, events, responses, log lines) are cut at
//! [`TEXT_LIMIT`] bytes.
//!
//! Successful `@connections` calls are sampled: a broadcast posts once per recipient, so a
//! busy chat makes a hundred thousand of them a second, and building and serialising each
//! would cost a viewer more than the deliveries it watches. At most [`POSTS_PER_SEC`] are
//! reported each second; the rest are counted (not built) and each subscriber is told how
//! many with the same `dropped` marker. Failed calls (410s among them) are always reported.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::ids::Id;
use crate::sigv4::Credential;
use crate::time;

pub mod http;

/// How many events the broadcast channel holds; a subscriber further behind loses the oldest.
pub const CAPACITY: usize = 1024;

/// Successful `@connections` calls reported per second at most; beyond, they are sampled out.
pub const POSTS_PER_SEC: u64 = 1000;

/// The longest text an event carries, in bytes; longer ones are cut (at a character boundary)
/// and marked `truncated`.
pub const TEXT_LIMIT: usize = 4096;

/// Who made an `@connections` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// An HTTP client, by its address.
    Http(SocketAddr),
    /// A built-in app, from inside the process.
    BuiltIn,
    /// The inspector's own page or API.
    Inspector,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Http(peer) => write!(f, "http {peer}"),
            Caller::BuiltIn => f.write_str("built-in"),
            Caller::Inspector => f.write_str("inspector"),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// A connection completed its handshake and was registered.
    Connected {
        /// Its id.
        connection_id: String,
        /// The client's address.
        source_ip: String,
        /// The client's `User-Agent`.
        user_agent: Option<String>,
    },
    /// A connection closed.
    Disconnected {
        /// Its id.
        connection_id: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A message arrived from a client.
    Frame {
        /// The sender.
        connection_id: String,
        /// Its size in bytes.
        size: usize,
        /// Its text (cut at [`TEXT_LIMIT`]); `None` for binary messages.
        text: Option<String>,
        /// Whether `text` was cut.
        truncated: bool,
        /// Whether it was a binary message.
        binary: bool,
    },
    /// Route selection chose a route for a message (or none).
    Route {
        /// The sender.
        connection_id: String,
        /// The route selected; `None` when nothing matched and there is no `$default`.
        route: Option<String>,
        /// The value of the route selection expression for this message; `None` when the
        /// message was not JSON (or binary) and so could not be evaluated.
        selection: Option<String>,
        /// The expression itself.
        expression: String,
    },
    /// An integration call finished.
    Invocation {
        /// The connection the event was about.
        connection_id: String,
        /// The route.
        route: String,
        /// The integration's name (a function name, a URL, `echo`).
        function: String,
        /// The event's request id.
        request_id: String,
        /// The proxy result's status, when there was one.
        status: Option<u16>,
        /// Whether the call failed (an error, a timeout, or a status outside 2xx).
        failed: bool,
        /// The error, when the call failed without a result.
        error: Option<String>,
        /// How long the call took, in milliseconds.
        duration_ms: f64,
        /// The event sent (JSON, cut at [`TEXT_LIMIT`]).
        event: String,
        /// The proxy result (JSON, cut at [`TEXT_LIMIT`]), when there was one.
        response: Option<String>,
    },
    /// An `@connections` call.
    Management {
        /// The connection addressed.
        connection_id: String,
        /// `post`, `get` or `delete`.
        operation: &'static str,
        /// Who called.
        caller: String,
        /// The HTTP status it answers (or would answer, for a call from inside the process).
        status: u16,
        /// The posted payload's size.
        size: Option<usize>,
        /// The posted payload's text (cut at [`TEXT_LIMIT`]).
        text: Option<String>,
    },
    /// A line a function printed while handling a request.
    FunctionLog {
        /// The function.
        function: String,
        /// The request it was handling.
        request_id: String,
        /// The line (cut at [`TEXT_LIMIT`]).
        line: String,
    },
}

impl Kind {
    fn connection_id(&self) -> Option<&str> {
        match self {
            Kind::Connected { connection_id, .. }
            | Kind::Disconnected { connection_id, .. }
            | Kind::Frame { connection_id, .. }
            | Kind::Route { connection_id, .. }
            | Kind::Invocation { connection_id, .. }
            | Kind::Management { connection_id, .. } => Some(connection_id),
            Kind::FunctionLog { .. } => None,
        }
    }

    fn route(&self) -> Option<&str> {
        match self {
            Kind::Route { route, .. } => route.as_deref(),
            Kind::Invocation { route, .. } => Some(route),
            _ => None,
        }
    }

    fn function(&self) -> Option<&str> {
        match self {
            Kind::Invocation { function, .. } | Kind::FunctionLog { function, .. } => {
                Some(function)
            }
            _ => None,
        }
    }
}

/// One event as published: what the filters look at, and its JSON, serialised once for every
/// subscriber.
#[derive(Debug)]
pub struct Published {
    /// The event.
    pub kind: Kind,
    /// `{"seq":..,"time_ms":..,"type":..,...}`.
    pub json: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    seq: u64,
    time_ms: i64,
    #[serde(flatten)]
    kind: &'a Kind,
}

/// Which events a subscriber wants; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Filter {
    /// Only events about this connection.
    pub connection: Option<String>,
    /// Only route decisions and invocations of this route.
    pub route: Option<String>,
    /// Only invocations and log lines of this function (integration name).
    pub function: Option<String>,
}

impl Filter {
    /// Whether `kind` passes.
    pub fn matches(&self, kind: &Kind) -> bool {
        let field = |want: &Option<String>, have: Option<&str>| match want {
            None => true,
            Some(want) if want.is_empty() => true,
            Some(want) => have == Some(want.as_str()),
        };
        field(&self.connection, kind.connection_id())
            && field(&self.route, kind.route())
            && field(&self.function, kind.function())
    }
}

/// The gateway's event stream. One per server, shared (`Arc`) by the gateway and the
/// management API.
#[derive(Debug)]
pub struct Inspector {
    enabled: bool,
    credentials: Vec<Credential>,
    /// Live subscriptions; the hooks' one load.
    watchers: AtomicUsize,
    seq: AtomicU64,
    /// The current second (coarse clock) in the high 32 bits, the successful `@connections`
    /// calls reported in it in the low 32.
    posts_window: AtomicU64,
    /// Successful `@connections` calls sampled out since the start.
    sampled_out: AtomicU64,
    sender: broadcast::Sender<Arc<Published>>,
}

impl Default for Inspector {
    fn default() -> Self {
        Inspector::new(true, Vec::new())
    }
}

impl Inspector {
    /// An inspector; `enabled = false` refuses every subscription (the hooks then never find a
    /// subscriber). With `credentials`, callers must present one of them (HTTP Basic: access
    /// key id and secret) from anywhere; without, only loopback callers are served.
    pub fn new(enabled: bool, credentials: Vec<Credential>) -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Inspector {
            enabled,
            credentials,
            watchers: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            posts_window: AtomicU64::new(0),
            sampled_out: AtomicU64::new(0),
            sender,
        }
    }

    /// Whether the page and the stream are served at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether anyone is subscribed: the one relaxed load every hook makes.
    #[inline]
    pub fn is_watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) != 0
    }

    /// Publishes the event `make` builds, if anyone is subscribed; otherwise `make` is not
    /// called.
    #[inline]
    pub fn publish(&self, make: impl FnOnce() -> Kind) {
        if self.is_watched() {
            self.send(make());
        }
    }

    /// Whether an `@connections` call that answered `status` is reported: always when it
    /// failed, within [`POSTS_PER_SEC`] when it succeeded (otherwise it is counted as sampled
    /// out and must not be built). For a watched inspector only.
    pub(crate) fn admit_call(&self, status: u16) -> bool {
        if !(200..300).contains(&status) {
            return true;
        }
        let second = (time::coarse_now_ms() / 1000) as u64 & 0xffff_ffff;
        let window = self.posts_window.load(Ordering::Relaxed);
        if window >> 32 != second {
            // A new second. Racing callers may each start it: the budget is approximate.
            self.posts_window.store(second << 32 | 1, Ordering::Relaxed);
            return true;
        }
        if window & 0xffff_ffff >= POSTS_PER_SEC {
            self.sampled_out.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.posts_window.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Publishes one line a function printed while handling `request_id` (for the Lambda
    /// runtime's output forwarding: one call per line of an invocation's stdout or stderr).
    pub fn function_log(&self, function: &str, request_id: &str, line: &str) {
        self.publish(|| Kind::FunctionLog {
            function: function.to_owned(),
            request_id: request_id.to_owned(),
            line: cut(line).0,
        });
    }

    #[cold]
    fn send(&self, kind: Kind) {
        let envelope = Envelope {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            time_ms: time::now_ms(),
            kind: &kind,
        };
        let json = serde_json::to_string(&envelope).expect("events always serialise");
        // An error means the last subscriber left meanwhile: nobody to tell.
        let _ = self.sender.send(Arc::new(Published { kind, json }));
    }

    /// A new subscription receiving the events `filter` passes; `None` when the inspector is
    /// disabled.
    pub fn subscribe(self: &Arc<Self>, filter: Filter) -> Option<Subscription> {
        if !self.enabled {
            return None;
        }
        let receiver = self.sender.subscribe();
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Some(Subscription {
            receiver,
            filter,
            sampled_seen: self.sampled_out.load(Ordering::Relaxed),
            inspector: Arc::clone(self),
        })
    }

    /// Who may see the page and the stream: with credentials configured, a caller presenting
    /// one of them as HTTP Basic (`Authorization: Basic base64(id:secret)`), from anywhere;
    /// without, loopback callers only.
    pub fn authorize(&self, peer: IpAddr, authorization: Option<&str>) -> Result<(), Denied> {
        if !self.enabled {
            return Err(Denied::Disabled);
        }
        if self.credentials.is_empty() {
            return if peer.to_canonical().is_loopback() {
                Ok(())
            } else {
                Err(Denied::NotLoopback)
            };
        }
        let presented = authorization.and_then(basic_credentials);
        match presented {
            Some((id, secret))
                if self.credentials.iter().any(|c| {
                    c.access_key_id == id && constant_time_eq(&c.secret_access_key, &secret)
                }) =>
            {
                Ok(())
            }
            _ => Err(Denied::Credentials),
        }
    }
}

/// Why the inspector refused a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// `[inspector] enabled = false`.
    #[error("the inspector is disabled")]
    Disabled,
    /// No credentials configured and the caller is not on loopback.
    #[error(
        "the inspector accepts loopback callers only unless management credentials are configured"
    )]
    NotLoopback,
    /// Credentials configured and none (or wrong ones) presented.
    #[error(
        "the inspector needs the management credentials (HTTP Basic: access key id and secret)"
    )]
    Credentials,
}

fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = header.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Item {
    /// An event that passed the filter.
    Event(Arc<Published>),
    /// This many events were lost because the subscriber fell behind.
    Dropped(u64),
}

impl Item {
    /// The item as one line of JSON; the marker is `{"type":"dropped","count":N}`.
    pub fn json(&self) -> String {
        match self {
            Item::Event(event) => event.json.clone(),
            Item::Dropped(n) => format!("{{\"type\":\"dropped\",\"count\":{n}}}"),
        }
    }
}

/// One subscriber's view of the stream; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Published>>,
    filter: Filter,
    /// The inspector's sampled-out count this subscriber has been told of.
    sampled_seen: u64,
    inspector: Arc<Inspector>,
}

impl Subscription {
    /// The next event that passes the filter, or how many were lost (fallen behind or
    /// sampled out since the last call); `None` never happens while the inspector exists.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            let sampled = self.inspector.sampled_out.load(Ordering::Relaxed);
            if sampled > self.sampled_seen {
                let n = sampled - self.sampled_seen;
                self.sampled_seen = sampled;
                return Some(Item::Dropped(n));
            }
            match self.receiver.recv().await {
                Ok(event) if self.filter.matches(&event.kind) => return Some(Item::Event(event)),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Item::Dropped(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inspector.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `text` cut at [`TEXT_LIMIT`] bytes (at a character boundary), and whether it was cut.
pub fn cut(text: &str) -> (String, bool) {
    if text.len() <= TEXT_LIMIT {
        return (text.to_owned(), false);
    }
    let mut end = TEXT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// `bytes` as text cut at [`TEXT_LIMIT`] (lossy for invalid UTF-8).
pub(crate) fn cut_bytes(bytes: &[u8]) -> String {
    let end = bytes.len().min(TEXT_LIMIT);
    let (text, _) = cut(&String::from_utf8_lossy(&bytes[..end]));
    text
}

/// An id as the events spell it.
pub(crate) fn id(id: &Id) -> String {
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn frame(connection: &str) -> Kind {
        Kind::Frame {
            connection_id: connection.into(),
            size: 2,
            text: Some("hi".into()),
            truncated: false,
            binary: false,
        }
    }

    #[test]
    fn without_a_subscriber_nothing_is_built() {
        let inspector = Inspector::default();
        let mut built = false;
        inspector.publish(|| {
            built = true;
            frame("a")
        });
        assert!(!built);
        assert_eq!(inspector.seq.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_subscriber_gets_events_and_leaving_stops_the_building() {
        let inspector = Arc::new(Inspector::default());
        let mut sub = inspector.subscribe(Filter::default()).unwrap();
        inspector.publish(|| frame("a"));
        let Some(Item::Event(event)) = sub.next().await else {
            panic!("expected an event");
        };
        assert!(event.json.contains("\"type\":\"frame\""), "{}", event.json);
        assert!(event.json.contains("\"connection_id\":\"a\""));
        drop(sub);
        assert!(!inspector.is_watched());
        let mut built = false;
        inspector.publish(|| {
            built = true;
            frame("a")
        });
        assert!(!built);
    }

    #[tokio::test]
    async fn successful_calls_beyond_the_budget_are_sampled_out_and_reported_as_dropped() {
        let inspector = Arc::new(Inspector::default());
        let mut watching = inspector.subscribe(Filter::default()).unwrap();
        let tries = POSTS_PER_SEC * 3;
        let admitted = (0..tries).filter(|_| inspector.admit_call(200)).count() as u64;
        // The budget holds within each second the loop touched (one, or two across a tick).
        assert!(
            (POSTS_PER_SEC..=2 * POSTS_PER_SEC).contains(&admitted),
            "{admitted}"
        );
        // Failures are never sampled out.
        assert!((0..tries).all(|_| inspector.admit_call(410)));
        inspector.publish(|| frame("a"));
        match watching.next().await {
            Some(Item::Dropped(n)) => assert_eq!(n, tries - admitted),
            other => panic!("expected a dropped marker, got {other:?}"),
        }
        assert!(matches!(watching.next().await, Some(Item::Event(_))));
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_a_dropped_marker_then_the_newest() {
        let inspector = Arc::new(Inspector::default());
        let mut sub = inspector.subscribe(Filter::default()).unwrap();
        let extra = 10;
        for _ in 0..CAPACITY + extra {
            inspector.publish(|| frame("a"));
        }
        match sub.next().await {
            Some(Item::Dropped(n)) => assert_eq!(n, extra as u64),
            other => panic!("expected a dropped marker, got {other:?}"),
        }
        let mut rest = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(10), sub.next()).await
        {
            rest += 1;
        }
        assert_eq!(rest, CAPACITY);
        assert_eq!(Item::Dropped(3).json(), r#"{"type":"dropped","count":3}"#);
    }

    #[tokio::test]
    async fn filters_pass_only_matching_events() {
        let inspector = Arc::new(Inspector::default());
        let filter = Filter {
            connection: Some("b".into()),
            ..Filter::default()
        };
        let mut sub = inspector.subscribe(filter).unwrap();
        inspector.publish(|| frame("a"));
        inspector.publish(|| frame("b"));
        let Some(Item::Event(event)) = sub.next().await else {
            panic!("expected an event");
        };
        assert_eq!(event.kind.connection_id(), Some("b"));

        let by_route = Filter {
            route: Some("echo".into()),
            ..Filter::default()
        };
        assert!(!by_route.matches(&frame("a")));
        assert!(by_route.matches(&Kind::Route {
            connection_id: "a".into(),
            route: Some("echo".into()),
            selection: Some("echo".into()),
            expression: "$request.body.action".into(),
        }));
        let by_function = Filter {
            function: Some("f".into()),
            ..Filter::default()
        };
        assert!(by_function.matches(&Kind::FunctionLog {
            function: "f".into(),
            request_id: "r".into(),
            line: "x".into(),
        }));
    }

    #[test]
    fn texts_are_cut_at_the_limit_on_a_character_boundary() {
        let long = "é".repeat(TEXT_LIMIT);
        let (text, truncated) = cut(&long);
        assert!(truncated);
        assert!(text.len() <= TEXT_LIMIT);
        assert_eq!(cut("short"), ("short".to_owned(), false));
    }

    #[test]
    fn access_is_loopback_only_without_credentials() {
        let open = Inspector::default();
        assert_eq!(open.authorize(Ipv4Addr::LOCALHOST.into(), None), Ok(()));
        assert_eq!(
            open.authorize(Ipv4Addr::new(192, 0, 2, 1).into(), None),
            Err(Denied::NotLoopback)
        );
        let disabled = Inspector::new(false, Vec::new());
        assert_eq!(
            disabled.authorize(Ipv4Addr::LOCALHOST.into(), None),
            Err(Denied::Disabled)
        );
        assert!(Arc::new(disabled).subscribe(Filter::default()).is_none());
    }

    #[test]
    fn with_credentials_basic_auth_is_required_from_anywhere() {
        use base64::Engine;
        let inspector = Inspector::new(
            true,
            vec![Credential {
                access_key_id: "AKID".into(),
                secret_access_key: "secret".into(),
            }],
        );
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let remote: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        assert_eq!(
            inspector.authorize(remote, Some(&basic("AKID:secret"))),
            Ok(())
        );
        assert_eq!(
            inspector.authorize(remote, Some(&basic("AKID:wrong"))),
            Err(Denied::Credentials)
        );
        assert_eq!(
            inspector.authorize(Ipv4Addr::LOCALHOST.into(), None),
            Err(Denied::Credentials)
        );
    }
}
