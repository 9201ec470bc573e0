//! Shared test harness: a real server on port 0, real WebSocket clients, recording integrations.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard::api::{Api, ApiError};
use switchboard::config::Config;
use switchboard::event::{Event, Response};
use switchboard::gateway::Gateway;
use switchboard::integration::Deferred;
use switchboard::integration::{Integration, IntegrationError, Invocation};
use switchboard::management::ManagementApi;
use switchboard::{Error, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    _data: tempfile::TempDir,
}

pub fn config() -> Config {
    Config::default()
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        Self::start_server(config, Server::new).await
    }

    pub async fn with_api(
        config: Config,
        build: impl FnOnce(ManagementApi) -> Result<Api, ApiError>,
    ) -> Self {
        Self::start_server(config, move |config| Server::with_api(config, build)).await
    }

    async fn start_server(
        mut config: Config,
        make: impl FnOnce(Config) -> Result<Server, Error>,
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        config.data_dir = data.path().to_owned();
        // The whole suite can run with connections on worker threads.
        if config.workers == 0
            && let Ok(workers) = std::env::var("SWITCHBOARD_TEST_WORKERS")
        {
            config.workers = workers.parse().expect("SWITCHBOARD_TEST_WORKERS: a number");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = make(config).unwrap();
        let gateway = server.gateway().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            gateway,
            shutdown: Some(tx),
            task: Some(task),
            _data: data,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/{}", self.addr, self.gateway.api_context.stage)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/{}", self.addr, self.gateway.api_context.stage)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let (head, mut stream) = raw_request(self.addr, &request).await;
        assert_eq!(status_of(&head), 200, "{head}");
        let mut body = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut body))
            .await
            .expect("the body in time")
            .unwrap();
        body
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// Whether `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        is_ready(&self.addr.to_string()).await
    }

    /// Waits until the server holds `n` connections.
    pub async fn wait_for_connections(&self, n: usize) {
        eventually(WAIT, || async { self.gateway.registry.local_count() == n }).await;
    }

    /// Starts the graceful shutdown and waits for `serve` to return.
    pub async fn stop(&mut self) -> Result<(), Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the server stops")
            .expect("the server task does not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Client { ws }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(&value.to_string()).await;
    }

    /// The next frame, which must be text.
    pub async fn recv(&mut self) -> String {
        match self.next().await {
            Message::Text(t) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn recv_json(&mut self) -> Value {
        let text = self.recv().await;
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }

    /// The next frame that is not a ping or pong.
    pub async fn next(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the stream is open")
                .expect("a valid frame");
            match frame {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
    }

    /// Waits for the server's close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Message::Close(Some(frame)) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Message::Close(None) => return (1005, String::new()),
                Message::Text(_) | Message::Binary(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub async fn close(mut self, code: u16, reason: &str) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: reason.to_owned().into(),
            }))
            .await;
        // Wait for the server's reply so the close handshake completes.
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }

    /// The connection id, as the articles' `$default` route reports it.
    pub async fn chat_id(&mut self) -> String {
        self.send(r#"{"action":"whoami"}"#).await;
        let reply = self.recv().await;
        let json = reply
            .strip_prefix("Use the sendmessage route to send a message. Your info: ")
            .unwrap_or_else(|| panic!("unexpected reply {reply}"));
        let v: Value = serde_json::from_str(json).unwrap();
        v["connectionID"].as_str().unwrap().to_owned()
    }
}

type Respond = dyn Fn(&Value) -> Result<Response, IntegrationError> + Send + Sync;

/// An integration that reports every event it gets (as AWS JSON) and answers with `respond`.
pub struct Recorder {
    name: &'static str,
    tx: mpsc::UnboundedSender<Value>,
    respond: Box<Respond>,
    delay: Option<Duration>,
}

impl Recorder {
    pub fn new(name: &'static str) -> (Self, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Recorder {
                name,
                tx,
                respond: Box::new(|_| Ok(Response::ok())),
                delay: None,
            },
            rx,
        )
    }

    pub fn respond(
        mut self,
        f: impl Fn(&Value) -> Result<Response, IntegrationError> + Send + Sync + 'static,
    ) -> Self {
        self.respond = Box::new(f);
        self
    }

    /// Answers after `delay`, as an integration that calls out would.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

impl Integration for Recorder {
    fn invoke(&self, event: &Event<'_>) -> Invocation {
        let json: Value = serde_json::from_slice(&event.to_json()).unwrap();
        let result = (self.respond)(&json);
        let _ = self.tx.send(json);
        match self.delay {
            None => Deferred::Ready(result),
            Some(delay) => Deferred::Pending(Box::pin(async move {
                tokio::time::sleep(delay).await;
                result
            })),
        }
    }

    fn name(&self) -> &str {
        self.name
    }
}

pub async fn next_event(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event in time")
        .expect("the recorder is alive")
}

/// A raw HTTP exchange: sends `request`, returns the response head and the open stream.
pub async fn raw_request(addr: SocketAddr, request: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(WAIT, async {
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await
    .expect("a response in time");
    (String::from_utf8(head).unwrap(), stream)
}

/// A handshake request for `path` with extra header lines.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &[&str]) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

pub fn status_of(head: &str) -> u16 {
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Reads one server frame from a raw stream: (opcode, payload).
pub async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(WAIT, async {
        let mut h = [0u8; 2];
        stream.read_exact(&mut h).await.unwrap();
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            stream.read_exact(&mut l).await.unwrap();
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            stream.read_exact(&mut l).await.unwrap();
            len = u64::from_be_bytes(l) as usize;
        }
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        (h[0] & 0x0f, payload)
    })
    .await
    .expect("a frame in time")
}

/// Connects with a raw socket and completes the handshake.
pub async fn raw_ws(server: &TestServer) -> TcpStream {
    let req = upgrade_request(server.addr, "/dev", &[]);
    let (head, stream) = raw_request(server.addr, &req).await;
    assert_eq!(status_of(&head), 101, "{head}");
    stream
}

pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    switchboard_bench::encode_client_frame(opcode, fin, payload, [0x12, 0x34, 0x56, 0x78])
}

/// The log (stderr) of a binary started by [`spawn_binary`], line by line.
pub type Log = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// Starts the real binary on a free port with extra `serve` arguments; returns the child, its
/// address and its log lines (stderr) after the `listening` line. Read the log or hand it to
/// [`drain_log`]: a binary whose log pipe is full blocks.
pub async fn spawn_binary(
    data_dir: &std::path::Path,
    extra: &[&str],
) -> (tokio::process::Child, String, Log) {
    let (child, listening, lines) = spawn_binary_listening(data_dir, extra).await;
    let rest = listening.split("address=").nth(1).expect("the address");
    let addr = rest.split_whitespace().next().unwrap().to_owned();
    (child, addr, lines)
}

/// [`spawn_binary`], returning the whole `listening` log line instead of the address.
pub async fn spawn_binary_listening(
    data_dir: &std::path::Path,
    extra: &[&str],
) -> (tokio::process::Child, String, Log) {
    use tokio::io::AsyncBufReadExt;
    // Only the switchboard crate's tests build the binary; other crates share this module.
    let Some(binary) = option_env!("CARGO_BIN_EXE_switchboard") else {
        panic!("spawn_binary is for the switchboard crate's tests");
    };
    let mut child = tokio::process::Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = tokio::time::timeout(WAIT, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the server logs");
            if line.contains("address=") {
                return line;
            }
        }
    })
    .await
    .expect("the server starts");
    (child, listening, lines)
}

/// Keeps reading a spawned binary's log, so that it never blocks on a full pipe.
pub fn drain_log(mut log: Log) {
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
}

/// Sends SIGTERM to a spawned process (a graceful stop for the binary).
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("the process runs").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

/// Asserts that a finished process exited with success, showing its stderr if not.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the server at `addr` answers `GET /readyz` with 200 (false if it does not answer).
pub async fn is_ready(addr: &str) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        Some(response.starts_with(b"HTTP/1.1 200 "))
    };
    matches!(tokio::time::timeout(WAIT, exchange).await, Ok(Some(true)))
}

/// The resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS is reported")
}

/// A loopback address no socket holds now (for programs that must be told their port).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A real `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// With `persistent`, data survives restarts (append-only file, fsync every write), as a
    /// production Redis for the chat's history is configured.
    pub async fn start_with(persistent: bool) -> Self {
        let port = free_addr().port();
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            persistent,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends a signal to the server (`-STOP` makes it stop answering without closing sockets,
    /// `-CONT` resumes it).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// Starts (again) on the same port, with no data.
    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = s.write_all(b"PING\r\n").await;
                    let mut buf = [0u8; 7];
                    if s.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n" {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server starts");
    }

    /// Kills the server at once (like a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it holds, for at most `limit`.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(limit, async {
        while !check().await {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("the condition holds in time");
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
