//! The bench tool's WebSocket client side: target URLs, connecting from chosen source
//! addresses, the handshake, and cheap parsing of server frames.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::BenchError;

/// How long one connection attempt (TCP and handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest handshake response head the client reads.
const MAX_HEAD: usize = 4096;

/// A parsed `ws://host:port/path` URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, BenchError> {
        let bad = |why: &str| BenchError::Url(format!("{url}: {why}"));
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| bad("only ws:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| bad("the host has no IPv4 address"))?;
        Ok(Target {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The `host[:port]` as the URL gave it.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The path, `/` when the URL has none.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    fn request(&self) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.path,
            self.host,
            handshake_key()
        )
    }
}

/// A `Sec-WebSocket-Key` of its own for every connection, as RFC 6455 asks: some servers
/// (serverless-offline) tell concurrent handshakes apart by it.
fn handshake_key() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        now ^ u64::from(std::process::id()).rotate_left(32)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&splitmix64(seed ^ n).to_le_bytes());
    nonce[8..].copy_from_slice(&splitmix64(seed.wrapping_add(n).rotate_left(17)).to_le_bytes());
    base64(&nonce)
}

/// SplitMix64's output function: spreads a counter's bits over the whole word.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An open WebSocket connection: the socket and the bytes that followed the `101` head.
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) leftover: Vec<u8>,
}

/// Connects (from `source` when given) and completes the WebSocket handshake.
pub(crate) async fn connect(target: &Target, source: Option<IpAddr>) -> io::Result<Connected> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(target, source))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

async fn connect_inner(target: &Target, source: Option<IpAddr>) -> io::Result<Connected> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        // Binding to (ip, 0) makes the kernel pick a port no socket on `ip` holds, TIME_WAIT
        // ones included, searching longer as earlier runs leave more of them: after two runs
        // of 10,000 connections, connects/s fell from 29,000 to 1,800. With
        // IP_BIND_ADDRESS_NO_PORT the port is picked at `connect`, where only the whole
        // address pair must be unique.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(io::Error::from)?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let mut stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(target.request().as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let end = loop {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::other("handshake response too large"));
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
        return Err(io::Error::other(format!(
            "handshake refused: {}",
            String::from_utf8_lossy(line)
        )));
    }
    Ok(Connected {
        stream,
        leftover: head.split_off(end),
    })
}

/// What [`parse_frames`] found in a buffer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Bytes consumed: whole frames only.
    pub(crate) consumed: usize,
    /// Whether a close frame arrived.
    pub(crate) closed: bool,
    /// The length of an incomplete frame at the end, header included, when known.
    pub(crate) need: Option<usize>,
}

/// Parses unmasked server frames, calling `on_data` with each data frame's payload.
pub(crate) fn parse_frames(buf: &[u8], mut on_data: impl FnMut(&[u8])) -> Parsed {
    let mut at = 0;
    let mut parsed = Parsed::default();
    while buf.len() - at >= 2 {
        let b0 = buf[at];
        let short = (buf[at + 1] & 0x7f) as usize;
        let (header, len) = match short {
            126 if buf.len() - at >= 4 => {
                (4, u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize)
            }
            127 if buf.len() - at >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&buf[at + 2..at + 10]);
                (10, u64::from_be_bytes(l) as usize)
            }
            126 | 127 => break,
            n => (2, n),
        };
        if buf.len() - at < header + len {
            parsed.need = Some(header + len);
            break;
        }
        let payload = &buf[at + header..at + header + len];
        match b0 & 0x0f {
            0x0..=0x2 => on_data(payload),
            0x8 => {
                parsed.closed = true;
                at += header + len;
                break;
            }
            _ => {}
        }
        at += header + len;
    }
    parsed.consumed = at;
    parsed
}

/// Writes the bench message: a marker, the send time in µs and a sequence number, padded.
pub(crate) fn stamp(send_us: u64, seq: u32, size: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    write!(out, "~{send_us:016x}{seq:08x}").expect("writing to memory cannot fail");
    out.resize(size.max(STAMP_LEN), b'x');
}

/// Length of the stamp at the start of every bench message.
pub(crate) const STAMP_LEN: usize = 25;

/// Reads the send time back from a delivered payload (the stamp may be anywhere in it).
pub(crate) fn read_stamp(payload: &[u8]) -> Option<u64> {
    // Frames that are not bench messages (presence lists of thousands of ids) have no `~`:
    // `contains` on bytes is a word-at-a-time search, where `position` goes byte by byte.
    if !payload.contains(&b'~') {
        return None;
    }
    let start = payload.iter().position(|b| *b == b'~')? + 1;
    let hex = payload.get(start..start + 16)?;
    let mut v = 0u64;
    for &c in hex {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Encodes a client frame, masked with `mask` (the bench varies it per message; tests fix it).
pub fn encode_client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        let mut out = Vec::new();
        stamp(123_456_789, 7, 64, &mut out);
        assert_eq!(out.len(), 64);
        assert_eq!(read_stamp(&out), Some(123_456_789));
        let wrapped = [b"{\"m\":\"".as_slice(), &out, b"\"}"].concat();
        assert_eq!(read_stamp(&wrapped), Some(123_456_789));
        assert_eq!(read_stamp(b"no stamp"), None);
    }

    #[test]
    fn parses_whole_frames_and_leaves_partial_ones() {
        let mut buf = vec![0x81, 2, b'h', b'i', 0x81, 126, 0, 200];
        buf.extend(std::iter::repeat_n(b'a', 100));
        let mut seen = Vec::new();
        let p = parse_frames(&buf, |p| seen.push(p.len()));
        assert_eq!(seen, vec![2]);
        assert_eq!(p.consumed, 4);
        assert_eq!(p.need, Some(204));
        let p = parse_frames(&[0x88, 2, 3, 232, 0x81, 0], |_| {});
        assert!(p.closed);
        assert_eq!(p.consumed, 4);
    }

    #[test]
    fn handshake_keys_are_base64_nonces_of_their_own() {
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        let (a, b) = (handshake_key(), handshake_key());
        assert_eq!(a.len(), 24);
        assert!(a.ends_with("=="));
        assert_ne!(a, b);
    }

    #[test]
    fn parses_urls() {
        let t = Target::parse("ws://127.0.0.1:9000/dev").unwrap();
        assert_eq!(t.addr.port(), 9000);
        assert!(
            t.request()
                .starts_with("GET /dev HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n")
        );
        assert!(Target::parse("http://x/").is_err());
    }
}
