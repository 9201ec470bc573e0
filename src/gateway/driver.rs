//! The task of one open WebSocket connection.
//!
//! One poll function drives everything a connection does, so a connection is one task with
//! no channels and no buffers while it is idle:
//! - **writes**: frames queued in the connection's outbox are taken in one go and written
//!   with vectored writes; the byte budget is given back as bytes reach the socket;
//! - **reads**: the socket is read through a stack buffer into a read buffer that exists only
//!   while a frame is incomplete; complete messages go through route selection to their
//!   integration;
//! - **integrations** that answer later (HTTP, Lambda) run as futures owned by the task, at
//!   most `max_inflight_per_connection` at once; beyond that the task stops reading;
//! - **closing**: a close requested by the management API, the sweeper or shutdown is sent
//!   after the frames queued before it, then the task waits for the client's close.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::Instrument;

use crate::api::{Route, Selected};
use crate::deferred::Deferred;
use crate::event::{Event, EventKind, Message, Response};
use crate::gateway::conn::{Conn, SLOW_CONSUMER};
use crate::gateway::frame::{Decoded, Decoder, OutFrame, Violation};
use crate::gateway::{Gateway, call};
use crate::ids::Id;
use crate::inspector::{self, Kind};
use crate::integration::IntegrationError;
use crate::limits::TokenBucket;
use crate::time;

/// How long the gateway waits for the client's close frame after sending its own.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most frames handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Size of the stack buffer reads go through.
const READ_CHUNK: usize = 8 * 1024;

/// Why a connection ended: what `$disconnect` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// `disconnectStatusCode`.
    pub code: u16,
    /// `disconnectReason`.
    pub reason: Cow<'static, str>,
}

impl Disconnect {
    fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Disconnect {
            code,
            reason: reason.into(),
        }
    }

    fn abnormal() -> Self {
        Disconnect::new(1006, "Connection closed abnormally")
    }
}

/// A finished integration call.
struct Invoked {
    result: Result<Response, IntegrationError>,
    request_id: Id,
    route: Arc<Route>,
}

type InvokeFuture = Pin<Box<dyn Future<Output = Invoked> + Send>>;

enum Step {
    Message(Message),
    Invoked(Invoked),
    /// Progress was made that needs another turn of the loop.
    Again,
    Done(Disconnect),
}

#[derive(Debug)]
enum Closing {
    /// The gateway sent a close frame and waits for the client's.
    Sent {
        disconnect: Disconnect,
        /// Stop reading: the input cannot be trusted after a protocol violation.
        deaf: bool,
    },
    /// The client sent a close frame; the gateway's reply is being written.
    Replying(Disconnect),
}

pub(crate) struct Driver<'g, S> {
    gw: &'g Gateway,
    conn: Arc<Conn>,
    peer: SocketAddr,
    io: S,
    read_buf: BytesMut,
    decoder: Decoder,
    /// Frames taken from the outbox, not yet fully written.
    out: VecDeque<Bytes>,
    /// Bytes of `out[0]` already written.
    out_offset: usize,
    /// Created on the first deferred call: an empty `FuturesUnordered` allocates.
    inflight: Option<FuturesUnordered<InvokeFuture>>,
    closing: Option<Closing>,
    close_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Messages per second, when limited.
    rate: Option<TokenBucket>,
}

impl<'g, S: AsyncRead + AsyncWrite + Unpin> Driver<'g, S> {
    pub(crate) fn new(
        gw: &'g Gateway,
        conn: Arc<Conn>,
        io: S,
        leftover: BytesMut,
        peer: SocketAddr,
    ) -> Self {
        Driver {
            gw,
            conn,
            peer,
            io,
            read_buf: leftover,
            decoder: Decoder::default(),
            out: VecDeque::new(),
            out_offset: 0,
            inflight: None,
            closing: None,
            close_timer: None,
            rate: (gw.limits.max_messages_per_sec > 0)
                .then(|| TokenBucket::new(gw.limits.max_messages_per_sec)),
        }
    }

    /// Runs the connection until it is closed, and says why it closed.
    ///
    /// Not an `async fn`: those keep their arguments twice (as arguments and as bindings), and
    /// this future's size is part of what every idle connection costs. Here the `Driver` is
    /// captured once.
    pub(crate) fn run(self) -> impl Future<Output = Disconnect> + 'g
    where
        S: 'g,
    {
        let mut this = self;
        async move {
            let disconnect = poll_fn(|cx| this.poll_run(cx)).await;
            this.conn.mark_closed();
            // Let calls still running finish: their side effects belong to the handler.
            if let Some(mut rest) = this.inflight.take().filter(|f| !f.is_empty()) {
                tokio::spawn(async move { while rest.next().await.is_some() {} });
            }
            // Best effort: the client may be gone already. Boxed: a timer is large.
            let _ = Box::pin(tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncWriteExt::shutdown(&mut this.io),
            ))
            .await;
            disconnect
        }
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        loop {
            match ready!(self.poll_step(cx)) {
                Step::Message(message) => self.on_message(message),
                Step::Invoked(invoked) => {
                    self.on_result(&invoked.route, invoked.result, invoked.request_id)
                }
                Step::Again => {}
                Step::Done(disconnect) => return Poll::Ready(disconnect),
            }
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        // Woken by close requests and overflows even while the socket is blocked.
        self.conn.register(cx);
        if self.closing.is_none() {
            if self.conn.is_overflowed() {
                self.close_slow_consumer();
            } else if let Some(close) = self.conn.close_request() {
                // Sent after the frames already queued; the close timer bounds the wait.
                self.start_close(close.code, close.reason);
            }
        }
        if let Poll::Ready(Err(_)) = self.poll_write(cx) {
            let disconnect = match self.closing.take() {
                Some(Closing::Sent { disconnect, .. } | Closing::Replying(disconnect)) => {
                    disconnect
                }
                None => Disconnect::abnormal(),
            };
            return Poll::Ready(Step::Done(disconnect));
        }
        let flushed = self.out.is_empty();
        if flushed && let Some(Closing::Replying(disconnect)) = &self.closing {
            return Poll::Ready(Step::Done(disconnect.clone()));
        }
        if flushed
            && let Some(Closing::Sent {
                disconnect,
                deaf: true,
            }) = &self.closing
        {
            return Poll::Ready(Step::Done(disconnect.clone()));
        }
        if let Some(inflight) = &mut self.inflight
            && !inflight.is_empty()
            && let Poll::Ready(Some(invoked)) = inflight.poll_next_unpin(cx)
        {
            return Poll::Ready(Step::Invoked(invoked));
        }
        if let Some(timer) = &mut self.close_timer
            && timer.as_mut().poll(cx).is_ready()
        {
            let disconnect = match self.closing.take() {
                Some(Closing::Sent { disconnect, .. } | Closing::Replying(disconnect)) => {
                    disconnect
                }
                None => Disconnect::abnormal(),
            };
            return Poll::Ready(Step::Done(disconnect));
        }
        let reading = match &self.closing {
            None => {
                self.inflight.as_ref().map_or(0, FuturesUnordered::len)
                    < self.gw.limits.max_inflight_per_connection
            }
            Some(Closing::Sent { deaf, .. }) => !deaf,
            Some(Closing::Replying(_)) => false,
        };
        if reading {
            return self.poll_input(cx);
        }
        Poll::Pending
    }

    /// Decodes buffered input, reading more when it holds no complete frame.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            match self
                .decoder
                .decode(&mut self.read_buf, &self.gw.decode_limits)
            {
                Ok(Some(decoded)) => return Poll::Ready(self.on_frame(decoded)),
                Ok(None) => {}
                Err(violation) => {
                    self.read_buf = BytesMut::new();
                    self.fail(violation);
                    return Poll::Ready(Step::Again);
                }
            }
            if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
                // Idle connections keep no read buffer.
                self.read_buf = BytesMut::new();
            }
            match ready!(self.poll_read_some(cx)) {
                Ok(0) | Err(_) => {
                    let disconnect = match self.closing.take() {
                        Some(Closing::Sent { disconnect, .. }) => disconnect,
                        _ => Disconnect::abnormal(),
                    };
                    return Poll::Ready(Step::Done(disconnect));
                }
                Ok(_) => {}
            }
        }
    }

    fn on_frame(&mut self, decoded: Decoded) -> Step {
        self.conn.touch();
        match decoded {
            Decoded::Message { data, binary } => {
                self.conn.count_message_in();
                if self.closing.is_some() {
                    // Messages after the gateway's close frame are dropped, as RFC 6455 allows.
                    return Step::Again;
                }
                Step::Message(Message { data, binary })
            }
            Decoded::Ping(payload) => {
                if self.closing.is_none() {
                    self.conn.push_control(&OutFrame::pong(&payload));
                }
                Step::Again
            }
            Decoded::Pong => Step::Again,
            Decoded::Close(close) => {
                let disconnect = match (&self.closing, close) {
                    (Some(Closing::Sent { disconnect, .. }), _) => {
                        // The client answered our close: done.
                        return Step::Done(disconnect.clone());
                    }
                    (_, Some((code, reason))) => {
                        self.conn.push_control(&OutFrame::close(code, &reason));
                        Disconnect::new(code, reason)
                    }
                    (_, None) => {
                        self.conn.push_control(&OutFrame::close_empty());
                        Disconnect::new(1005, "Client-side close frame status not set")
                    }
                };
                self.closing = Some(Closing::Replying(disconnect));
                Step::Again
            }
        }
    }

    /// Closes the connection because the client broke the protocol or a limit.
    fn fail(&mut self, violation: Violation) {
        self.span().in_scope(|| {
            tracing::debug!(
                code = violation.code,
                reason = violation.reason,
                "closing connection"
            );
        });
        self.conn
            .push_control(&OutFrame::close(violation.code, violation.reason));
        self.closing = Some(Closing::Sent {
            disconnect: Disconnect::new(violation.code, violation.reason),
            deaf: true,
        });
    }

    /// The client stopped reading and its outbox overflowed: drop what it has not been sent
    /// (keeping a frame already partly written, so the stream stays well-formed) and close.
    fn close_slow_consumer(&mut self) {
        self.gw
            .metrics
            .slow_consumers_closed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(reason = SLOW_CONSUMER, "closing a slow consumer");
        let keep = usize::from(self.out_offset > 0);
        let dropped: usize = self.out.drain(keep..).map(|f| f.len()).sum();
        self.conn.release(dropped);
        self.start_close(1008, SLOW_CONSUMER);
    }

    fn start_close(&mut self, code: u16, reason: &'static str) {
        if self.closing.is_some() {
            return;
        }
        self.conn.push_control(&OutFrame::close(code, reason));
        self.closing = Some(Closing::Sent {
            disconnect: Disconnect::new(code, reason),
            deaf: false,
        });
        self.close_timer = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
    }

    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        self.read_buf.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }

    /// Writes queued frames until the socket would block or nothing is left.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.out.is_empty() {
                // With no bytes queued or unwritten the outbox lock is skipped. A push after
                // this check wakes the task (its waker is registered).
                if self.conn.queued_bytes() > 0 {
                    self.conn.drain(&mut self.out);
                }
                if self.out.is_empty() {
                    return Pin::new(&mut self.io).poll_flush(cx);
                }
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, frame) in self.out.iter().take(MAX_IOVECS).enumerate() {
                let start = if i == 0 { self.out_offset } else { 0 };
                slices[i] = IoSlice::new(&frame[start..]);
                count += 1;
            }
            let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.conn.release(written);
            let mut left = written;
            let mut frames = 0;
            while left > 0 {
                let front = self.out[0].len() - self.out_offset;
                if left >= front {
                    left -= front;
                    self.out.pop_front();
                    self.out_offset = 0;
                    frames += 1;
                } else {
                    self.out_offset += left;
                    left = 0;
                }
            }
            self.gw.metrics.frames_out.add(frames);
        }
    }

    fn on_message(&mut self, message: Message) {
        if let Some(rate) = &mut self.rate
            && !rate.try_take()
        {
            self.gw.metrics.throttled.fetch_add(1, Ordering::Relaxed);
            self.send_error("Too Many Requests", Id::random());
            return;
        }
        let gw = self.gw;
        let selected = gw.api.select(&message);
        let request_id = Id::random();
        let inspector = gw.management.inspector();
        if inspector.is_watched() {
            self.inspect(&message, &selected);
        }
        let Some(route) = selected.route else {
            gw.metrics.unrouted.fetch_add(1, Ordering::Relaxed);
            self.send_error("Forbidden", request_id);
            return;
        };
        let event = Event {
            route_key: &route.key,
            request_id,
            request_time_ms: time::now_ms(),
            api: &gw.api_context,
            connection: &self.conn.context,
            kind: EventKind::Message {
                message: &message,
                message_id: Id::random(),
                json: selected.json.as_ref(),
            },
        };
        match call::call(inspector, route, &event, gw.limits.integration_timeout()) {
            Deferred::Ready(result) => self.on_result(route, result, request_id),
            Deferred::Pending(future) => {
                let route = route.clone();
                let span = self.span();
                let inflight = self.inflight.get_or_insert_with(FuturesUnordered::new);
                inflight.push(Box::pin(
                    async move {
                        Invoked {
                            result: future.await,
                            request_id,
                            route,
                        }
                    }
                    .instrument(span),
                ));
            }
        }
    }

    /// Publishes a message and its route decision to the inspector.
    #[cold]
    fn inspect(&self, message: &Message, selected: &Selected<'_>) {
        let inspector = self.gw.management.inspector();
        let connection_id = inspector::id(&self.conn.id());
        let text = (!message.binary).then(|| String::from_utf8_lossy(&message.data));
        let (text, truncated) = match text.as_deref().map(inspector::cut) {
            Some((text, truncated)) => (Some(text), truncated),
            None => (None, false),
        };
        inspector.publish(|| Kind::Frame {
            connection_id: connection_id.clone(),
            size: message.data.len(),
            text,
            truncated,
            binary: message.binary,
        });
        let expression = self.gw.api.selection();
        let selection = match (&selected.json, message.binary) {
            (_, true) => None,
            (Some(json), false) => Some(expression.evaluate_json(json)),
            (None, false) if !expression.needs_json() => {
                Some(expression.evaluate_json(&serde_json::Value::Null))
            }
            (None, false) => None,
        };
        inspector.publish(|| Kind::Route {
            connection_id,
            route: selected.route.map(|r| r.key.to_string()),
            selection,
            expression: expression.as_str().to_owned(),
        });
    }

    /// The connection's span, for what the task logs.
    fn span(&self) -> tracing::Span {
        crate::gateway::conn_span(self.conn.id(), self.peer)
    }

    fn on_result(
        &mut self,
        route: &Route,
        result: Result<Response, IntegrationError>,
        request_id: Id,
    ) {
        match result {
            Err(error) => {
                self.span().in_scope(|| {
                    tracing::warn!(route = %route.key, %request_id, %error, "integration failed");
                });
                self.send_error("Internal server error", request_id);
            }
            Ok(response) if route.two_way => {
                if let Some(body) = response.body_bytes() {
                    let frame = if response.is_base64_encoded {
                        OutFrame::binary(&body)
                    } else {
                        OutFrame::text(&body)
                    };
                    self.reply(&frame);
                }
            }
            Ok(_) => {}
        }
    }

    /// Sends API Gateway's error frame, byte for byte.
    fn send_error(&mut self, message: &str, request_id: Id) {
        let text = format!(
            r#"{{"message": "{message}", "connectionId":"{}", "requestId":"{request_id}"}}"#,
            self.conn.id()
        );
        self.reply(&OutFrame::text(text.as_bytes()));
    }

    fn reply(&mut self, frame: &OutFrame) {
        if let Err(error) = self.conn.push_quiet(frame) {
            self.span()
                .in_scope(|| tracing::debug!(%error, "reply dropped"));
        }
    }
}
