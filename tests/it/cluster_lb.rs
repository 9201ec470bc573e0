//! Three real nodes behind a real nginx (the `examples/cluster/nginx.conf` setup): clients
//! chat across nodes, a node is drained, and its clients reconnect elsewhere and recover what
//! they missed with `since`.

use std::net::SocketAddr;

use crate::chat_common::texts;
use crate::common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// nginx in the foreground, configured from the example with our ports.
struct Nginx {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(listen: SocketAddr, upstreams: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let example = include_str!("../../examples/cluster/nginx.conf");
        let servers: String = upstreams
            .iter()
            .map(|u| format!("        server {u};\n"))
            .collect();
        let start = example.find("        server 127.0.0.1:8081;").unwrap();
        let end = example.find("    }\n\n    map").unwrap();
        let mut conf = format!("{}{}{}", &example[..start], servers, &example[end..]);
        conf = conf.replace("listen 127.0.0.1:8080;", &format!("listen {listen};"));
        // Run in the foreground as one process, with its files in the temporary directory.
        let prefix = format!(
            "daemon off;\nmaster_process off;\npid {0}/nginx.pid;\nerror_log {0}/error.log;\n",
            dir.path().display()
        );
        let temp = format!(
            "    access_log off;\n    client_body_temp_path {0}/body;\n    proxy_temp_path {0}/proxy;\n    fastcgi_temp_path {0}/fastcgi;\n    uwsgi_temp_path {0}/uwsgi;\n    scgi_temp_path {0}/scgi;\n",
            dir.path().display()
        );
        conf = format!(
            "{prefix}{}",
            conf.replacen("http {\n", &format!("http {{\n{temp}"), 1)
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = tokio::process::Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx is installed (scripts/test.sh installs it)");
        eventually(WAIT, || async {
            tokio::net::TcpStream::connect(listen).await.is_ok()
        })
        .await;
        Nginx { child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn joined(url: &str, name: &str, since: Option<u64>) -> (Client, Value) {
    let mut client = Client::connect(url).await;
    let mut join = json!({"action": "join", "room": "lb", "name": name});
    if let Some(since) = since {
        join["since"] = since.into();
    }
    client.send_json(join).await;
    let frame = client.next_of("joined").await;
    (client, frame)
}

#[tokio::test]
async fn a_drained_node_s_clients_reconnect_elsewhere_and_recover() {
    let redis = RedisServer::start_with(true).await;
    let data = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let dir = data.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "drain_timeout_secs = 5\n[cluster]\nredis = \"{}\"\nnode_id = \"{name}\"\nnode_ttl_secs = 3\nkey_prefix = \"lb{}\"\n[chat]\nrate_per_sec = 1000\nrate_burst = 1000\n",
                redis.url(),
                redis.port
            ),
        )
        .unwrap();
        let (child, addr, logs) = spawn_binary(&dir, &["--config", config.to_str().unwrap()]).await;
        nodes.push((child, addr, logs));
    }
    for (_, addr, _) in &nodes {
        eventually(WAIT, || is_ready(addr)).await;
    }
    let listen = free_addr();
    let upstreams: Vec<String> = nodes.iter().map(|(_, a, _)| a.clone()).collect();
    let _nginx = Nginx::start(listen, &upstreams).await;
    let url = format!("ws://{listen}/dev");

    // The speaker talks to node a directly, so that it outlives the drain of node b.
    let node_a = format!("ws://{}/dev", nodes[0].1);
    let (mut speaker, _) = joined(&node_a, "speaker", None).await;
    let send = async |speaker: &mut Client, text: &str| -> u64 {
        speaker
            .send_json(json!({"action": "send", "room": "lb", "text": text}))
            .await;
        loop {
            let m = speaker.next_of("message").await;
            if m["text"] == text {
                return m["id"].as_u64().unwrap();
            }
        }
    };

    // Six clients through nginx, spread over the three nodes by round-robin.
    let mut clients = Vec::new();
    for i in 0..6 {
        let (client, _) = joined(&url, &format!("user{i}"), None).await;
        clients.push(client);
    }
    send(&mut speaker, "one").await;
    for c in clients.iter_mut() {
        assert_eq!(c.next_of("message").await["text"], "one");
    }

    // The management API through nginx reaches a connection on whichever node holds it.
    speaker.send(r#"{"action":"whoami"}"#).await;
    let info = loop {
        let text = speaker.recv().await;
        let prefix = "Use the sendmessage route to send a message. Your info: ";
        if let Some(json) = text.strip_prefix(prefix) {
            break serde_json::from_str::<Value>(json).unwrap();
        }
    };
    let id = info["connectionID"].as_str().unwrap().to_owned();
    let r = reqwest::Client::new()
        .post(format!(
            "http://{listen}/dev/@connections/{}",
            id.replace('=', "%3D")
        ))
        .body("through nginx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    while speaker.recv().await != "through nginx" {}

    // Drain node b and wait until it has exited: its clients have been closed with 1001.
    let (mut b, _, _) = nodes.remove(1);
    sigterm(&b);
    assert!(b.wait().await.unwrap().success());
    let probe = send(&mut speaker, "probe").await;
    let mut survivors = Vec::new();
    let mut drained = 0;
    for mut c in clients {
        let outcome = loop {
            match c.next().await {
                Message::Close(Some(f)) => break Err(u16::from(f.code)),
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if v["type"] == "message" && v["id"] == probe {
                        break Ok(());
                    }
                }
                _ => {}
            }
        };
        match outcome {
            Ok(()) => survivors.push(c),
            Err(code) => {
                assert_eq!(code, 1001, "a drained node says it is going away");
                drained += 1;
            }
        }
    }
    assert!(drained >= 1, "round-robin put clients on node b");
    assert!(!survivors.is_empty());

    // While they are away, more messages.
    let first_missed = send(&mut speaker, "while away 1").await;
    send(&mut speaker, "while away 2").await;

    // They reconnect through nginx (which now reaches a or c) and recover with `since`.
    for i in 0..drained {
        let (_, frame) = joined(&url, &format!("back{i}"), Some(first_missed - 1)).await;
        assert_eq!(texts(&frame["messages"]), ["while away 1", "while away 2"]);
        assert_eq!(frame["truncated"], false);
    }
    // Those who stayed got everything live, in order.
    for c in survivors.iter_mut() {
        assert_eq!(c.next_of("message").await["text"], "while away 1");
        assert_eq!(c.next_of("message").await["text"], "while away 2");
    }
}
