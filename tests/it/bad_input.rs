//! A corpus of bad input against the real binary: each case gets its documented status or close
//! code, the server keeps serving a bystander throughout, and memory returns to its baseline.

use std::net::SocketAddr;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends bytes after a completed handshake; returns the close code the server answered with.
async fn close_code_for(addr: SocketAddr, bytes: &[u8]) -> u16 {
    let (head, mut stream) = raw_request(addr, &upgrade_request(addr, "/dev", &[])).await;
    assert_eq!(status_of(&head), 101);
    stream.write_all(bytes).await.unwrap();
    loop {
        let (opcode, payload) = read_frame(&mut stream).await;
        if opcode == 8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// Sends a message and returns the first text frame in reply.
async fn reply_to(addr: SocketAddr, bytes: &[u8]) -> String {
    let (head, mut stream) = raw_request(addr, &upgrade_request(addr, "/dev", &[])).await;
    assert_eq!(status_of(&head), 101);
    stream.write_all(bytes).await.unwrap();
    let (opcode, payload) = read_frame(&mut stream).await;
    assert_eq!(opcode, 1);
    String::from_utf8(payload).unwrap()
}

/// Sends raw bytes as an HTTP request; returns the status.
async fn http_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    status_of(&text)
}

async fn management_status(addr: SocketAddr, path: &str) -> u16 {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    http_status(addr, request.as_bytes()).await
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

async fn run_corpus(addr: SocketAddr) {
    const TUTORIAL: &str = "Use the sendmessage route to send a message. Your info: ";
    // Malformed and deeply nested JSON: not JSON, so `$default` answers.
    for body in [
        b"{\"action\":".to_vec(),
        nested(16_000),
        format!(
            "{{\"action\":\"sendmessage\",\"message\":{}}}",
            String::from_utf8(nested(10_000)).unwrap()
        )
        .into_bytes(),
        b"{\"action\":\"\\ud800\"}".to_vec(),
    ] {
        let reply = reply_to(addr, &client_frame(1, true, &body)).await;
        assert!(reply.starts_with(TUTORIAL), "{reply}");
    }
    // Frame-level violations.
    let mut two_fragments_of_big = client_frame(1, false, &vec![b'a'; 30_000]);
    for _ in 0..5 {
        two_fragments_of_big.extend(client_frame(0, false, &vec![b'a'; 30_000]));
    }
    let huge_length = {
        let mut f = vec![0x81, 0xff];
        f.extend_from_slice(&(1u64 << 62).to_be_bytes());
        f.extend_from_slice(&[1, 2, 3, 4]);
        f
    };
    for (bytes, code) in [
        (client_frame(1, true, &[0xc3, 0x28]), 1007),
        (client_frame(1, true, &vec![b'a'; 32 * 1024 + 1]), 1009),
        (two_fragments_of_big, 1009),
        (huge_length, 1009),
        (client_frame(2, true, b"binary"), 1003),
        (client_frame(9, false, b"fragmented ping"), 1002),
        (client_frame(3, true, b"opcode 3"), 1002),
        (client_frame(11, true, b"opcode 11"), 1002),
        (b"\x81\x03abc".to_vec(), 1002),
        (vec![0xc1, 0x81, 1, 2, 3, 4, b'a' ^ 1], 1002),
        (client_frame(8, true, &999u16.to_be_bytes()), 1002),
        (client_frame(8, true, &1004u16.to_be_bytes()), 1002),
        (client_frame(8, true, &[0x13, 0x88, 0xff]), 1002),
    ] {
        assert_eq!(
            close_code_for(addr, &bytes).await,
            code,
            "{:?}",
            &bytes[..bytes.len().min(16)]
        );
    }
    // HTTP-level garbage.
    assert_eq!(
        http_status(
            addr,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"
        )
        .await,
        400
    );
    assert_eq!(
        http_status(
            addr,
            b"GET /nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await,
        404
    );
    let huge = format!(
        "GET /dev HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(http_status(addr, huge.as_bytes()).await, 431);
    let mut many = String::from("GET /dev HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(http_status(addr, many.as_bytes()).await, 431);
    // Bad ids and path tricks on the management API.
    for (path, status) in [
        ("/dev/@connections/..%2F..%2Fetc%2Fpasswd", 400),
        ("/dev/@connections/%E2%98%83", 400),
        ("/dev/@connections/%ZZ", 400),
        ("/dev/@connections/AAAAAAAAAAAAAAA%00", 400),
        ("/dev/@connections/Tq3mxb7WNjMCFhA%253D", 400),
        ("/dev/../@connections/Tq3mxb7WNjMCFhA=", 404),
        ("/dev/@connections/../../x", 404),
        ("/d%C3%A9v/@connections/Tq3mxb7WNjMCFhA=", 403),
        ("/dev/@connections/AAAAAAAAAAAAAAA=", 410),
    ] {
        assert_eq!(management_status(addr, path).await, status, "{path}");
    }
    let long_id = format!("/dev/@connections/{}", "A".repeat(10_000));
    assert_eq!(management_status(addr, &long_id).await, 400);
}

#[tokio::test]
async fn bad_input_gets_clear_answers_and_leaves_others_and_memory_alone() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("switchboard.toml");
    std::fs::write(&config, "[limits]\nhandshake_timeout_secs = 1\n").unwrap();
    let (child, addr, _logs) =
        spawn_binary(data.path(), &["--config", config.to_str().unwrap()]).await;
    let addr: SocketAddr = addr.parse().unwrap();
    let pid = child.id().unwrap();
    let mut bystander = Client::connect(&format!("ws://{addr}/dev")).await;
    bystander.chat_id().await;

    // A client that sends half a request head and nothing more gets 408.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /dev HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, slow.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&response)), 408);

    // Warm up (allocator arenas, lazily built state), then measure.
    run_corpus(addr).await;
    let baseline = rss_kib(pid);
    for _ in 0..5 {
        run_corpus(addr).await;
    }
    let after = rss_kib(pid);
    assert!(
        after < baseline + 4096,
        "memory grew from {baseline} KiB to {after} KiB over five rounds of bad input"
    );

    // The bystander was never disturbed and is still served.
    bystander
        .send(r#"{"action":"sendmessage","data":"still fine"}"#)
        .await;
    assert_eq!(bystander.recv().await, "still fine");
}
