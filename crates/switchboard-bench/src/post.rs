//! The management API scenario: HTTP clients POST to connected WebSocket clients through
//! `@connections`, as a Lambda handler's `postToConnection` does, one request in flight per
//! keep-alive connection.
//!
//! First every WebSocket client learns its connection id: it sends `--hello` and reads the id
//! from the reply (`"connectionID":"..."` or `"connectionId":"..."`, as the articles' chat's
//! `$default` answers). Then `--posters` HTTP/1.1 connections each post in a loop, over the ids
//! in turn, for `--duration` seconds; the WebSocket clients count what arrives.

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::LocalSet;

use crate::client::{Connected, STAMP_LEN, Target, encode_client_frame, parse_frames, stamp};
use crate::fanout::Latency;
use crate::workers::{self, Shared};
use crate::{BenchError, check_file_limit, process_cpu_secs, table, thousands, worker_threads};

/// How long a WebSocket client waits for the reply that names its connection id.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `bench post`.
#[derive(Debug, Clone, clap::Args)]
pub struct PostOptions {
    /// WebSocket URL of the API, e.g. ws://127.0.0.1:8080/dev; the management endpoint is
    /// the same host and stage over http unless --endpoint says otherwise.
    #[arg(long)]
    pub url: String,
    /// The management endpoint, e.g. http://127.0.0.1:8080/dev.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// WebSocket clients posted to.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// HTTP keep-alive connections posting, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub posters: usize,
    /// Seconds of posting.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Size of each posted payload in bytes; at least 25.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// The frame each WebSocket client sends to learn its connection id.
    #[arg(long, default_value = r#"{"action":"whoami"}"#)]
    pub hello: String,
    /// Client worker threads [default: the number of cores, at most 4].
    #[arg(long)]
    pub threads: Option<usize>,
    /// The server's process id: adds its CPU time per post to the report.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// What `bench post` measured.
#[derive(Debug, Clone, Serialize)]
pub struct PostReport {
    /// Always `"post"`.
    pub scenario: &'static str,
    /// The management endpoint.
    pub endpoint: String,
    /// WebSocket clients posted to.
    pub clients: usize,
    /// HTTP connections posting.
    pub posters: usize,
    /// Seconds of posting.
    pub duration_secs: f64,
    /// Payload size.
    pub payload: usize,
    /// POSTs answered 200.
    pub posts: u64,
    /// POSTs answered otherwise, or connections that failed.
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// POSTs answered 200 per second.
    pub posts_per_sec: f64,
    /// Round trip of one POST (request written to response read).
    pub latency: Latency,
    /// Frames the WebSocket clients received (the drain included).
    pub delivered: u64,
    /// `delivered / posts`.
    pub delivery_ratio: f64,
    /// Server CPU seconds (user + system) over the posting and a short drain.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU microseconds per POST answered 200.
    pub server_cpu_us_per_post: Option<f64>,
}

impl PostReport {
    /// The human summary.
    pub fn table(&self) -> String {
        let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
        let mut rows = vec![
            ("endpoint", self.endpoint.clone()),
            (
                "load",
                format!(
                    "{} keep-alive posters, {} clients, {}-byte payloads, {} s",
                    self.posters, self.clients, self.payload, self.duration_secs
                ),
            ),
            ("posts", thousands(self.posts)),
            ("errors", thousands(self.errors)),
            ("posts/s", thousands(self.posts_per_sec as u64)),
            (
                "latency p50/p90/p99/max",
                format!(
                    "{} / {} / {} / {}",
                    ms(self.latency.p50_us),
                    ms(self.latency.p90_us),
                    ms(self.latency.p99_us),
                    ms(self.latency.max_us)
                ),
            ),
            ("delivered", thousands(self.delivered)),
            ("delivery ratio", format!("{:.4}", self.delivery_ratio)),
        ];
        if let Some(error) = &self.first_error {
            rows.push(("first error", error.clone()));
        }
        if let (Some(cpu), Some(per)) = (self.server_cpu_secs, self.server_cpu_us_per_post) {
            rows.push(("server CPU", format!("{cpu:.2} s, {per:.2} us/post")));
        }
        table(&rows)
    }
}

/// Where the posters send their requests.
#[derive(Debug, Clone)]
struct Endpoint {
    addr: SocketAddr,
    host: String,
    /// `/{stage}/@connections/`.
    prefix: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, BenchError> {
        let as_ws = url.strip_prefix("http://").ok_or_else(|| {
            BenchError::Url(format!("{url}: only http:// endpoints are supported"))
        })?;
        let target = Target::parse(&format!("ws://{as_ws}"))?;
        let path = target.path().trim_end_matches('/');
        Ok(Endpoint {
            addr: target.addr,
            host: target.host().to_owned(),
            prefix: format!("{path}/@connections/"),
        })
    }
}

/// What every task of one worker shares.
struct Ctx {
    endpoint: Endpoint,
    ids: Arc<OnceLock<Vec<String>>>,
    start: Instant,
    end: Instant,
    payload: usize,
    posters: usize,
    posts: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    first_error: Arc<std::sync::Mutex<Option<String>>>,
    latency: RefCell<Histogram<u64>>,
    finished: Cell<usize>,
}

impl Ctx {
    fn error(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("error lock");
        first.get_or_insert(error);
    }
}

/// Runs the management API scenario. Blocks; call it off any async runtime.
pub fn run_post(options: &PostOptions) -> Result<PostReport, BenchError> {
    let target = Target::parse(&options.url)?;
    let endpoint = match &options.endpoint {
        Some(url) => Endpoint::parse(url)?,
        None => Endpoint::parse(&format!("http://{}{}", target.host(), target.path()))?,
    };
    if options.payload < STAMP_LEN || options.clients == 0 || options.posters == 0 {
        return Err(BenchError::Options(format!(
            "need a --payload of at least {STAMP_LEN} bytes, a client and a poster"
        )));
    }
    check_file_limit(options.clients + options.posters)?;
    let threads = worker_threads(options.threads);
    let shared = Arc::new(Shared::new(threads));
    let ids: Arc<OnceLock<Vec<String>>> = Arc::default();
    let (ids_tx, ids_rx) = std::sync::mpsc::channel::<Vec<String>>();
    let (stats_tx, stats_rx) = std::sync::mpsc::channel::<Histogram<u64>>();
    let counters = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(std::sync::Mutex::new(None::<String>)),
    );
    let began = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for w in 0..threads {
        let (target, endpoint, shared, ids, options) = (
            target.clone(),
            endpoint.clone(),
            shared.clone(),
            ids.clone(),
            options.clone(),
        );
        let (ids_tx, stats_tx) = (ids_tx.clone(), stats_tx.clone());
        let (posts, errors, delivered, first_error) = counters.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-{w}"))
                .spawn(move || -> std::io::Result<()> {
                    let runtime = workers::runtime()?;
                    let local = LocalSet::new();
                    let indices = (w..options.clients).step_by(threads).collect();
                    let conns = runtime.block_on(local.run_until(workers::connect_share(
                        std::slice::from_ref(&target),
                        indices,
                        &[],
                        workers::CONNECT_CONCURRENCY,
                        &shared,
                    )));
                    // Each client learns its id; the ones that cannot are left out.
                    let hello = options.hello.clone();
                    let known = runtime.block_on(local.run_until(async {
                        let asked = conns.into_iter().map(|(_, conn)| learn_id(conn, &hello));
                        futures_util::future::join_all(asked).await
                    }));
                    let (mut mine, mut streams) = (Vec::new(), Vec::new());
                    for (id, stream) in known.into_iter().flatten() {
                        mine.push(id);
                        streams.push(stream);
                    }
                    let _ = ids_tx.send(mine);
                    drop(ids_tx);
                    let start = shared.worker_ready();
                    let ctx = Rc::new(Ctx {
                        endpoint,
                        ids,
                        start,
                        end: start + Duration::from_secs_f64(options.duration),
                        payload: options.payload,
                        posters: options.posters,
                        posts,
                        errors,
                        delivered,
                        first_error,
                        latency: RefCell::new(crate::fanout::new_histogram()),
                        finished: Cell::new(0),
                    });
                    let my_posters: Vec<usize> = (w..options.posters).step_by(threads).collect();
                    let poster_count = my_posters.len();
                    runtime.block_on(local.run_until(async {
                        for stream in streams {
                            tokio::task::spawn_local(receive(stream, ctx.clone()));
                        }
                        for p in my_posters {
                            tokio::task::spawn_local(post_loop(p, ctx.clone()));
                        }
                        // Until the end and this worker's posters are done (a worker may have
                        // none and must keep its clients connected), then a short drain.
                        while Instant::now() < ctx.end || ctx.finished.get() < poster_count {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }));
                    let _ = stats_tx.send(ctx.latency.borrow().clone());
                    Ok(())
                })?,
        );
    }
    drop((ids_tx, stats_tx));
    shared.wait_connected(threads, options.clients, began);
    let mut all = Vec::with_capacity(options.clients);
    for mine in ids_rx.iter().take(threads) {
        all.extend(mine);
    }
    let known = all.len();
    if known == 0 {
        return Err(BenchError::Options(format!(
            "no client learned its connection id from the reply to {}",
            options.hello
        )));
    }
    let _ = ids.set(all);
    let start = Instant::now() + Duration::from_millis(20);
    let cpu_before = cpu(&options.pid);
    shared.release(start);
    let mut latency = crate::fanout::new_histogram();
    for histogram in stats_rx.iter() {
        latency
            .add(&histogram)
            .expect("histograms share their bounds");
    }
    let cpu_after = cpu(&options.pid);
    for handle in handles {
        handle
            .join()
            .map_err(|_| BenchError::Options("a worker panicked".into()))??;
    }
    let (posts, errors, delivered, first_error) = counters;
    let posts = posts.load(Ordering::Relaxed);
    let delivered = delivered.load(Ordering::Relaxed);
    let server_cpu_secs = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    let first_error = first_error.lock().expect("error lock").clone();
    Ok(PostReport {
        scenario: "post",
        endpoint: format!("http://{}{}", endpoint.host, endpoint.prefix),
        clients: known,
        posters: options.posters,
        duration_secs: options.duration,
        payload: options.payload,
        posts,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        posts_per_sec: posts as f64 / options.duration,
        latency: Latency {
            p50_us: latency.value_at_quantile(0.50),
            p90_us: latency.value_at_quantile(0.90),
            p99_us: latency.value_at_quantile(0.99),
            max_us: latency.max(),
        },
        delivered,
        delivery_ratio: if posts == 0 {
            0.0
        } else {
            delivered as f64 / posts as f64
        },
        server_cpu_secs,
        server_cpu_us_per_post: server_cpu_secs
            .filter(|_| posts > 0)
            .map(|cpu| cpu * 1e6 / posts as f64),
    })
}

fn cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| process_cpu_secs(*pid)).sum()
}

/// Sends `hello` and reads the connection id from the reply.
async fn learn_id(conn: Connected, hello: &str) -> Option<(String, TcpStream)> {
    let Connected {
        mut stream,
        leftover,
    } = conn;
    let frame = encode_client_frame(1, true, hello.as_bytes(), [7, 3, 5, 1]);
    stream.write_all(&frame).await.ok()?;
    let mut buf = leftover;
    let read = async {
        loop {
            let mut id = None;
            let parsed = parse_frames(&buf, |payload| {
                if id.is_none() {
                    id = id_in(payload);
                }
            });
            buf.drain(..parsed.consumed);
            if id.is_some() || parsed.closed {
                return id;
            }
            buf.reserve(1024);
            match stream.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    };
    let id = tokio::time::timeout(HELLO_TIMEOUT, read).await.ok()??;
    Some((id, stream))
}

/// The connection id in a reply: the value of `"connectionID"` or `"connectionId"`.
fn id_in(payload: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(payload).ok()?;
    ["\"connectionID\":\"", "\"connectionId\":\""]
        .iter()
        .find_map(|key| {
            let rest = &text[text.find(key)? + key.len()..];
            Some(rest[..rest.find('"')?].to_owned())
        })
}

/// A WebSocket client: counts the frames posted to it.
async fn receive(mut stream: TcpStream, ctx: Rc<Ctx>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let mut count = 0;
        let parsed = parse_frames(&buf, |_| count += 1);
        buf.drain(..parsed.consumed);
        if let Some(need) = parsed.need {
            buf.reserve(need.saturating_sub(buf.len()));
        } else if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        ctx.delivered.fetch_add(count, Ordering::Relaxed);
        if parsed.closed {
            return;
        }
    }
}

/// One keep-alive HTTP connection posting until the end, one request in flight.
async fn post_loop(index: usize, ctx: Rc<Ctx>) {
    if let Err(error) = post_until_end(index, &ctx).await {
        ctx.error(error);
    }
    ctx.finished.set(ctx.finished.get() + 1);
}

async fn post_until_end(index: usize, ctx: &Ctx) -> Result<(), String> {
    let ids = ctx.ids.get().ok_or("no ids")?;
    let mut stream = TcpStream::connect(ctx.endpoint.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut request = Vec::with_capacity(256 + ctx.payload);
    let mut message = Vec::with_capacity(ctx.payload);
    let mut response = Vec::with_capacity(1024);
    // Posters start at different clients.
    let mut next = index * ids.len() / ctx.posters % ids.len();
    let mut seq = 0u32;
    while Instant::now() < ctx.end {
        let id = &ids[next];
        next = (next + 1) % ids.len();
        let sent = Instant::now();
        stamp(
            sent.duration_since(ctx.start).as_micros() as u64,
            seq,
            ctx.payload,
            &mut message,
        );
        seq = seq.wrapping_add(1);
        request.clear();
        write!(
            request,
            "POST {}{id} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            ctx.endpoint.prefix,
            ctx.endpoint.host,
            message.len()
        )
        .expect("writing to memory cannot fail");
        request.extend_from_slice(&message);
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let status = read_response(&mut stream, &mut response).await?;
        ctx.latency
            .borrow_mut()
            .saturating_record(sent.elapsed().as_micros().max(1) as u64);
        if status == 200 {
            ctx.posts.fetch_add(1, Ordering::Relaxed);
        } else {
            ctx.error(format!("POST answered {status}"));
        }
    }
    Ok(())
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) and returns its status;
/// bytes after it stay in `buf`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16, String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head =
                std::str::from_utf8(&buf[..end]).map_err(|_| "a response head not in UTF-8")?;
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or("a response without a status")?;
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let whole = end + 4 + length;
            while buf.len() < whole {
                read_more(stream, buf).await?;
            }
            buf.drain(..whole);
            return Ok(status);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(1024);
    match stream.read_buf(buf).await {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err("the server closed the connection".into()),
        Err(e) => Err(format!("read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_in_either_spelling() {
        let reply = br#"Use the sendmessage route. Your info: {"connectionID":"abc=","x":1}"#;
        assert_eq!(id_in(reply).as_deref(), Some("abc="));
        assert_eq!(
            id_in(br#"{"connectionId":"Zx_1"}"#).as_deref(),
            Some("Zx_1")
        );
        assert_eq!(id_in(b"hello"), None);
    }

    #[test]
    fn endpoints_keep_the_stage() {
        let e = Endpoint::parse("http://127.0.0.1:8080/dev").unwrap();
        assert_eq!(e.prefix, "/dev/@connections/");
        assert_eq!(e.host, "127.0.0.1:8080");
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.prefix, "/@connections/");
    }
}
