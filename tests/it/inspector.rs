//! The inspector: the event stream in process and over HTTP (SSE), its filters, its access
//! rule, its management calls, its snapshots (messages per connection, functions'
//! environments, DynamoDB tables and their items page by page), and `switchboard tail --json`
//! against the real binary.

use std::sync::Arc;

use serde_json::{Value, json};
use switchboard::Id;
use switchboard::api::Api;
use switchboard::api::SelectionExpression;
use switchboard::gateway::frame::OutFrame;
use switchboard::inspector::{Filter, Item, Subscription};
use switchboard::integration::echo::Echo;

use crate::common::*;
use crate::integrations_common::{api_config, dynamodb_call_ok, internal_error, python};

/// A server with an `echo` route (two-way), a `$disconnect` recorder and `$connect`.
async fn echo_server() -> (TestServer, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (connect, _connects) = Recorder::new("connect-fn");
    let (disconnect, disconnects) = Recorder::new("disconnect-fn");
    let server = TestServer::with_api(config(), |_| {
        Api::new(SelectionExpression::default())
            .route("$connect", Arc::new(connect), false)?
            .route("$disconnect", Arc::new(disconnect), false)?
            .route("echo", Arc::new(Echo), true)
    })
    .await;
    (server, disconnects)
}

fn subscribe(server: &TestServer, filter: Filter) -> Subscription {
    server
        .gateway
        .management
        .inspector()
        .subscribe(filter)
        .expect("the inspector is enabled")
}

/// The next event's JSON whose `type` is `kind` (others are skipped).
async fn next_of(sub: &mut Subscription, kind: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match sub.next().await.expect("the stream is open") {
                Item::Event(event) => {
                    let json: Value = serde_json::from_str(&event.json).unwrap();
                    if json["type"] == kind {
                        return json;
                    }
                }
                Item::Dropped(n) => panic!("{n} events dropped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event in time"))
}

async fn connection_id(sub: &mut Subscription) -> String {
    next_of(sub, "connected").await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_stream_shows_frame_route_invocation_post_and_disconnect() {
    let (server, mut disconnects) = echo_server().await;
    let mut sub = subscribe(&server, Filter::default());
    let mut client = server.connect().await;
    let connect = next_of(&mut sub, "invocation").await;
    assert_eq!(connect["route"], "$connect");
    assert_eq!(connect["function"], "connect-fn");
    let id = connection_id(&mut sub).await;

    client.send(r#"{"action":"echo","n":1}"#).await;
    let frame = next_of(&mut sub, "frame").await;
    assert_eq!(frame["connection_id"], id.as_str());
    assert_eq!(frame["text"], r#"{"action":"echo","n":1}"#);
    assert_eq!(frame["size"], 23);
    let route = next_of(&mut sub, "route").await;
    assert_eq!(route["route"], "echo");
    assert_eq!(route["selection"], "echo");
    assert_eq!(route["expression"], "$request.body.action");
    let call = next_of(&mut sub, "invocation").await;
    assert_eq!(call["route"], "echo");
    assert_eq!(call["function"], "echo");
    assert_eq!(call["status"], 200);
    assert_eq!(call["failed"], false);
    let event: Value = serde_json::from_str(call["event"].as_str().unwrap()).unwrap();
    assert_eq!(event["requestContext"]["connectionId"], id.as_str());
    assert_eq!(event["requestContext"]["routeKey"], "echo");
    assert!(call["response"].as_str().unwrap().contains("statusCode"));
    assert_eq!(client.recv().await, r#"{"action":"echo","n":1}"#);

    // A post from the inspector's API reaches the client and is reported with its caller.
    let http = reqwest::Client::new();
    // Ids hold `=`, `+` and `/`: the page percent-encodes them.
    let encoded = id
        .replace('=', "%3D")
        .replace('+', "%2B")
        .replace('/', "%2F");
    let url = server.http(&format!("/_switchboard/api/connections/{encoded}"));
    let r = http
        .post(&url)
        .header("X-Switchboard", "1")
        .body("hello from the inspector")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(client.recv().await, "hello from the inspector");
    let post = next_of(&mut sub, "management").await;
    assert_eq!(post["operation"], "post");
    assert_eq!(post["caller"], "inspector");
    assert_eq!(post["status"], 200);

    // Without the header, a cross-site form cannot post.
    let r = http.post(&url).body("x").send().await.unwrap();
    assert_eq!(r.status(), 403);

    // Disconnect from the inspector: the close, `$disconnect`, then 410 for a post.
    let r = http
        .delete(&url)
        .header("X-Switchboard", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(client.expect_close().await.0, 1000);
    let closed = next_of(&mut sub, "disconnected").await;
    assert_eq!(closed["code"], 1000);
    let disconnect = next_of(&mut sub, "invocation").await;
    assert_eq!(disconnect["route"], "$disconnect");
    assert_eq!(disconnect["function"], "disconnect-fn");
    next_event(&mut disconnects).await;
    let r = http
        .post(format!("{}/@connections/{id}", server.endpoint()))
        .body("late")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let gone = next_of(&mut sub, "management").await;
    assert_eq!(gone["status"], 410);
    assert!(
        gone["caller"]
            .as_str()
            .unwrap()
            .starts_with("http 127.0.0.1:")
    );
}

#[tokio::test]
async fn filters_by_connection_and_route() {
    let (server, _disconnects) = echo_server().await;
    let mut all = subscribe(&server, Filter::default());
    let mut a = server.connect().await;
    let id_a = connection_id(&mut all).await;
    let mut b = server.connect().await;
    let id_b = connection_id(&mut all).await;
    let mut only_b = subscribe(
        &server,
        Filter {
            connection: Some(id_b.clone()),
            ..Filter::default()
        },
    );
    let mut only_echo = subscribe(
        &server,
        Filter {
            route: Some("echo".into()),
            ..Filter::default()
        },
    );
    a.send(r#"{"action":"echo","from":"a"}"#).await;
    assert_eq!(a.recv().await, r#"{"action":"echo","from":"a"}"#);
    a.send(r#"{"action":"nothing"}"#).await;
    a.recv().await; // Forbidden
    b.send(r#"{"action":"echo","from":"b"}"#).await;
    assert_eq!(b.recv().await, r#"{"action":"echo","from":"b"}"#);

    let frame = next_of(&mut only_b, "frame").await;
    assert_eq!(frame["connection_id"], id_b.as_str());
    let route = next_of(&mut only_echo, "route").await;
    assert_eq!(route["connection_id"], id_a.as_str());
    let route = next_of(&mut only_echo, "route").await;
    assert_eq!(
        route["connection_id"],
        id_b.as_str(),
        "the unrouted frame is filtered out"
    );

    // The same filter over HTTP: the SSE stream.
    let http = reqwest::Client::new();
    let mut response = http
        .get(server.http(&format!("/_switchboard/stream?connection={id_a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b": subscribed\n\n");
    b.send(r#"{"action":"echo","from":"b"}"#).await;
    b.recv().await;
    a.send(r#"{"action":"echo","from":"a2"}"#).await;
    a.recv().await;
    let chunk = tokio::time::timeout(WAIT, response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk);
    let data = text.strip_prefix("data: ").unwrap().trim_end();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["type"], "frame");
    assert_eq!(event["connection_id"], id_a.as_str());
}

#[tokio::test]
async fn the_json_api_lists_connections_and_routes() {
    let (server, _disconnects) = echo_server().await;
    let mut sub = subscribe(&server, Filter::default());
    let mut client = server.connect().await;
    let id = connection_id(&mut sub).await;
    client.send(r#"{"action":"echo"}"#).await;
    client.recv().await;
    next_of(&mut sub, "invocation").await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(server.http(path)).send();
    let connections: Value = get("/_switchboard/api/connections")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = connections["connections"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["source_ip"], "127.0.0.1");
    assert_eq!(list[0]["queued_bytes"], 0);
    assert_eq!(list[0]["messages_in"], 1);
    assert_eq!(list[0]["messages_out"], 1, "the echo");
    let routes: Value = get("/_switchboard/api/routes")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let echo = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "echo")
        .unwrap();
    assert_eq!(echo["invocations"], 1);
    assert_eq!(echo["errors"], 0);
    assert!(echo["p50_ms"].as_f64().unwrap() > 0.0);
    let stats: Value = get("/_switchboard/api/stats")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["open_connections"], 1);
    assert_eq!(stats["frames_in"], 1);
    assert_eq!(stats["invocations"], 2, "$connect and echo");
    // No Lambda functions, no DynamoDB tables.
    assert_eq!(
        get_json(&server, "/_switchboard/api/functions").await,
        (200, json!({"functions": []}))
    );
    assert_eq!(
        get_json(&server, "/_switchboard/api/tables").await,
        (200, json!({"enabled": false, "tables": []}))
    );
    let (status, _) = get_json(&server, "/_switchboard/api/tables/any/items").await;
    assert_eq!(status, 404);
    let page = get("/_switchboard/").await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"));
    assert!(page.text().await.unwrap().contains("/_switchboard/app.js"));
    assert_eq!(get("/_switchboard/nothing").await.unwrap().status(), 404);
}

/// `GET /_switchboard/{path}` as JSON, with its status.
async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    let response = reqwest::get(server.http(path)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn connections_count_messages_in_and_out() {
    let (server, _disconnects) = echo_server().await;
    let mut sub = subscribe(&server, Filter::default());
    let mut a = server.connect().await;
    let id_a = connection_id(&mut sub).await;
    let mut b = server.connect().await;
    let id_b = connection_id(&mut sub).await;
    // In: three echoes and a frame no route takes; each is answered (out).
    for n in 0..3 {
        a.send(&format!(r#"{{"action":"echo","n":{n}}}"#)).await;
        assert_eq!(a.recv().await, format!(r#"{{"action":"echo","n":{n}}}"#));
    }
    a.send(r#"{"action":"nothing"}"#).await;
    assert_eq!(a.recv_json().await["message"], "Forbidden");
    // Out: two broadcasts to both, each frame encoded once and pushed to each recipient.
    let management = &server.gateway.management;
    for text in ["one", "two"] {
        let frame = OutFrame::text(text.as_bytes());
        for id in [&id_a, &id_b] {
            let id = Id::parse(id).unwrap();
            management.post_frame(&id, &frame).resolve().await.unwrap();
        }
    }
    for client in [&mut a, &mut b] {
        assert_eq!(client.recv().await, "one");
        assert_eq!(client.recv().await, "two");
    }
    let (status, body) = get_json(&server, "/_switchboard/api/connections").await;
    assert_eq!(status, 200);
    let counts = |id: &str| {
        let c = body["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed: {body}"));
        (c["messages_in"].clone(), c["messages_out"].clone())
    };
    assert_eq!(counts(&id_a), (json!(4), json!(6)));
    assert_eq!(counts(&id_b), (json!(0), json!(2)));
}

/// The process id of the function answering (the Python test function's `pid` action).
async fn pid(c: &mut Client) -> String {
    c.send(r#"{"action":"pid"}"#).await;
    c.recv().await
}

#[tokio::test]
async fn functions_show_their_environments_cold_starts_and_restarts() {
    let config = api_config(&format!(
        "[routes.\"$default\"]\nintegration = {}\nroute_response = \"$default\"\n",
        python(r#"function_name = "envs""#)
    ));
    let server = TestServer::start(config).await;
    let mut c = server.connect().await;
    let first = pid(&mut c).await;
    for _ in 0..2 {
        assert_eq!(pid(&mut c).await, first, "the warm process answers");
    }
    let envs = |body: &Value| {
        let list = body["functions"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{body}");
        list[0].clone()
    };
    let (status, body) = get_json(&server, "/_switchboard/api/functions").await;
    assert_eq!(status, 200);
    let f = envs(&body);
    assert_eq!(f["function"], "envs");
    assert_eq!(f["cold_starts"], 1, "one cold start for three calls: {f}");
    assert_eq!(f["invocations"], 3);
    assert_eq!(f["environments"], 1);
    assert_eq!(f["idle"], 1);
    assert_eq!(f["busy"], 0);
    assert_eq!(f["starting"], 0);
    assert_eq!(f["restarts"], 0);

    // A crash: the invocation fails, the process is restarted (a second cold start).
    c.send(r#"{"action":"crash"}"#).await;
    internal_error(&c.recv_json().await);
    let f = envs(&get_json(&server, "/_switchboard/api/functions").await.1);
    assert_eq!(f["restarts"], 1, "{f}");
    assert_eq!(f["busy"], 0);
    assert_ne!(pid(&mut c).await, first, "a new process answers");
    let f = envs(&get_json(&server, "/_switchboard/api/functions").await.1);
    assert_eq!(f["cold_starts"], 2, "{f}");
    assert_eq!(f["invocations"], 5);
    assert_eq!(f["environments"], 1);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("switchboard_function_restarts_total{function=\"envs\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_function_busy_environments{function=\"envs\"} 0"));
}

#[tokio::test]
async fn tables_are_listed_with_their_item_counts_and_read_page_by_page() {
    let mut cfg = config();
    cfg.dynamodb.enabled = true;
    let server = TestServer::start(cfg).await;
    let addr = server.addr.to_string();
    dynamodb_call_ok(
        &addr,
        "CreateTable",
        json!({
            "TableName": "things",
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }),
    )
    .await;
    const ITEMS: usize = 60;
    for batch in 0..ITEMS / 20 {
        let puts: Vec<_> = (batch * 20..(batch + 1) * 20)
            .map(|i| json!({"PutRequest": {"Item": {"id": {"S": format!("item-{i:02}")}, "n": {"N": i.to_string()}}}}))
            .collect();
        dynamodb_call_ok(
            &addr,
            "BatchWriteItem",
            json!({"RequestItems": {"things": puts}}),
        )
        .await;
    }

    let (status, body) = get_json(&server, "/_switchboard/api/tables").await;
    assert_eq!(status, 200);
    assert_eq!(body["enabled"], true);
    let tables = body["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{body}");
    assert_eq!(tables[0]["name"], "things");
    assert_eq!(tables[0]["item_count"], ITEMS);
    assert_eq!(tables[0]["partition_key"], "id");
    assert_eq!(tables[0]["sort_key"], Value::Null);

    // Page by page with the token each page ends with: every item once, no empty last page.
    let mut sizes = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut path = "/_switchboard/api/tables/things/items?limit=25".to_owned();
    loop {
        let (status, page) = get_json(&server, &path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["table"], "things");
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        for item in items {
            assert!(ids.insert(item["id"]["S"].as_str().unwrap().to_owned()));
            assert!(
                item["n"]["N"].is_string(),
                "items are DynamoDB JSON: {item}"
            );
        }
        match page["next"].as_str() {
            Some(next) => {
                path = format!("/_switchboard/api/tables/things/items?limit=25&start={next}");
            }
            None => break,
        }
    }
    assert_eq!(sizes, [25, 25, 10]);
    assert_eq!(ids.len(), ITEMS);
    // Without a limit, a page is 25 items.
    let (_, page) = get_json(&server, "/_switchboard/api/tables/things/items").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 25);

    let (status, body) = get_json(&server, "/_switchboard/api/tables/nothing/items").await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "no table named nothing");
    for bad in ["limit=0", "limit=101", "limit=x", "start=%21%21"] {
        let (status, body) = get_json(
            &server,
            &format!("/_switchboard/api/tables/things/items?{bad}"),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn disabled_the_inspector_serves_nothing_and_builds_nothing() {
    let mut cfg = config();
    cfg.inspector.enabled = false;
    let server = TestServer::start(cfg).await;
    let inspector = server.gateway.management.inspector();
    assert!(inspector.subscribe(Filter::default()).is_none());
    assert!(!inspector.is_watched());
    let http = reqwest::Client::new();
    for path in [
        "/_switchboard/",
        "/_switchboard/stream",
        "/_switchboard/api/connections",
    ] {
        let r = http.get(server.http(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn with_credentials_the_page_asks_for_them() {
    let mut cfg = config();
    cfg.management_credentials = vec![switchboard::config::Credential {
        access_key_id: "AKIDINSPECT".into(),
        secret_access_key: "s3cret".into(),
    }];
    let server = TestServer::start(cfg).await;
    let http = reqwest::Client::new();
    let url = server.http("/_switchboard/api/connections");
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let r = http
        .get(&url)
        .basic_auth("AKIDINSPECT", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&url)
        .basic_auth("AKIDINSPECT", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A non-loopback peer cannot be made here; the decision itself:
    let open = switchboard::inspector::Inspector::default();
    assert_eq!(
        open.authorize("192.0.2.7".parse().unwrap(), None),
        Err(switchboard::inspector::Denied::NotLoopback)
    );
}

#[tokio::test]
async fn tail_json_follows_the_stream_end_to_end() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr, log) = spawn_binary(data.path(), &["--app", "echo"]).await;
    drain_log(log);
    let binary = env!("CARGO_BIN_EXE_switchboard");
    let mut tail = tokio::process::Command::new(binary)
        .args(["tail", "--json", "--endpoint"])
        .arg(format!("http://{addr}"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    // Until tail is subscribed, frames are not seen: send until one is.
    let mut client = Client::connect(&format!("ws://{addr}/dev")).await;
    let found = tokio::time::timeout(WAIT, async {
        let mut n = 0;
        loop {
            n += 1;
            client.send(&format!("tail test {n}")).await;
            client.recv().await;
            let next =
                tokio::time::timeout(std::time::Duration::from_millis(200), lines.next_line())
                    .await;
            if let Ok(line) = next {
                let line = line.unwrap().expect("tail keeps running");
                let event: Value = serde_json::from_str(&line).unwrap();
                if event["type"] == "frame" {
                    return event;
                }
            }
        }
    })
    .await
    .expect("tail prints the frame");
    assert!(found["text"].as_str().unwrap().starts_with("tail test "));
    sigterm(&child);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    // The server ends the stream when it shuts down, and tail exits cleanly.
    let tail_status = tokio::time::timeout(WAIT, tail.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(tail_status.success());
}

/// The page in Debian's chromium driven by playwright-core (`tests/browser/inspector.test.mjs`,
/// run as `tests/it/browser.rs` runs the chat's).
#[test]
fn inspector_page_in_a_real_browser() {
    crate::browser::run_browser_test("inspector.test.mjs");
}
