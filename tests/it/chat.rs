//! The chat protocol, point by point, with real clients against a real server.

use crate::chat_common::*;
use crate::common::*;
use serde_json::{Value, json};
use switchboard::apps::chat::ChatConfig;
use switchboard::config::Config;

fn with_chat(chat: ChatConfig) -> Config {
    Config { chat, ..config() }
}

fn connection_id(joined: &Value) -> String {
    joined["you"]["connectionId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn join_answers_with_members_and_messages_and_tells_the_others() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;

    let joined = alice.join("lobby", "alice").await;
    assert_eq!(joined["you"]["name"], "alice");
    assert_eq!(connection_id(&joined).len(), 16);
    assert_eq!(names(&joined["members"]), ["alice"]);
    assert_eq!(joined["messages"], json!([]));
    assert_eq!(joined["lastId"], 0);
    assert_eq!(joined["truncated"], false);

    let joined = bob.join("lobby", "bob").await;
    assert_eq!(names(&joined["members"]), ["alice", "bob"]);
    let p = alice.expect("presence").await;
    assert_eq!(p["room"], "lobby");
    assert_eq!(p["event"], "join");
    assert_eq!(p["member"], joined["you"]);

    // Joining again answers again, without a second presence event: Bob's next frame is
    // Alice's message, not a presence event about himself.
    bob.join("lobby", "bob").await;
    alice.say("lobby", "hello").await;
    assert_eq!(bob.expect("message").await["text"], "hello");
}

#[tokio::test]
async fn send_reaches_every_member_with_ids_that_increase_by_one() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    let mut carol = server.connect().await;
    let a = alice.join("room-1", "alice").await;
    bob.join("room-1", "bob").await;
    alice.expect("presence").await;
    carol.join("room-2", "carol").await;

    alice
        .send_json(json!({"action":"send","room":"room-1","text":"hi <b>bob</b>","clientId":"c-1"}))
        .await;
    for c in [&mut alice, &mut bob] {
        let m = c.expect("message").await;
        assert_eq!(m["room"], "room-1");
        assert_eq!(m["id"], 1);
        assert_eq!(m["from"], a["you"]);
        assert_eq!(m["text"], "hi <b>bob</b>");
        assert_eq!(m["clientId"], "c-1");
        let ts = m["ts"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
    assert_eq!(bob.say("room-1", "two").await, 2);
    assert_eq!(alice.expect("message").await["id"], 2);
    // Ids are per room.
    assert_eq!(carol.say("room-2", "first").await, 1);
    // Carol got nothing from room-1: her next frame is the answer to her next request.
    carol
        .send_json(json!({"action":"who","room":"room-2"}))
        .await;
    carol.expect("members").await;
}

#[tokio::test]
async fn requests_in_a_room_not_joined_are_refused_with_not_member() {
    let server = TestServer::start(config()).await;
    let mut c = server.connect().await;
    for (action, body) in [
        ("send", json!({"action":"send","room":"lobby","text":"hi"})),
        ("history", json!({"action":"history","room":"lobby"})),
        (
            "react",
            json!({"action":"react","room":"lobby","id":1,"emoji":"👏"}),
        ),
        ("leave", json!({"action":"leave","room":"lobby"})),
    ] {
        c.send_json(body).await;
        c.expect_error("not_member", action).await;
    }
}

#[tokio::test]
async fn answers_come_in_the_order_of_the_requests() {
    let server = TestServer::start(config()).await;
    let mut c = server.connect().await;
    c.join("r", "alice").await;
    // Sent back to back, without waiting: a stored message, a refusal, a read, a reaction.
    for body in [
        json!({"action":"send","room":"r","text":"one"}),
        json!({"action":"send","room":"other","text":"two","clientId":"c-2"}),
        json!({"action":"history","room":"r"}),
        json!({"action":"react","room":"r","id":1,"emoji":"👏"}),
        json!({"action":"send","room":"r","text":"three"}),
    ] {
        c.send_json(body).await;
    }
    assert_eq!(c.expect("message").await["text"], "one");
    assert_eq!(
        c.expect_error("not_member", "send").await["clientId"],
        "c-2"
    );
    assert_eq!(ids(&c.expect("history").await["messages"]), [1]);
    assert_eq!(c.expect("reaction").await["count"], 1);
    assert_eq!(c.expect("message").await["id"], 2);
}

#[tokio::test]
async fn history_pages_back_with_has_more() {
    let server = TestServer::start(config()).await;
    let mut c = server.connect().await;
    c.join("r", "alice").await;
    for i in 1..=5 {
        assert_eq!(c.say("r", &format!("m{i}")).await, i);
    }
    let page = |before: Option<u64>| {
        let mut v = json!({"action":"history","room":"r","limit":2});
        if let Some(b) = before {
            v["before"] = b.into();
        }
        v
    };
    c.send_json(page(None)).await;
    let h = c.expect("history").await;
    assert_eq!(h["room"], "r");
    assert_eq!(ids(&h["messages"]), [4, 5]);
    assert_eq!(h["hasMore"], true);
    c.send_json(page(Some(4))).await;
    let h = c.expect("history").await;
    assert_eq!(ids(&h["messages"]), [2, 3]);
    assert_eq!(h["hasMore"], true);
    c.send_json(page(Some(2))).await;
    let h = c.expect("history").await;
    assert_eq!(ids(&h["messages"]), [1]);
    assert_eq!(h["hasMore"], false);
    assert_eq!(h["messages"][0]["text"], "m1");
    // Without a limit: the configured default (50), here everything.
    c.send_json(json!({"action":"history","room":"r"})).await;
    assert_eq!(ids(&c.expect("history").await["messages"]), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn join_with_since_recovers_missed_messages() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    alice.join("r", "alice").await;
    for i in 1..=4 {
        alice.say("r", &format!("m{i}")).await;
    }
    let mut bob = server.connect().await;
    bob.send_json(json!({"action":"join","room":"r","name":"bob","since":2}))
        .await;
    let joined = bob.expect("joined").await;
    assert_eq!(ids(&joined["messages"]), [3, 4]);
    assert_eq!(joined["lastId"], 4);
    assert_eq!(joined["truncated"], false);

    // Up to date: nothing to recover.
    let mut carol = server.connect().await;
    carol
        .send_json(json!({"action":"join","room":"r","name":"carol","since":4}))
        .await;
    let joined = carol.expect("joined").await;
    assert_eq!(joined["messages"], json!([]));
    assert_eq!(joined["truncated"], false);

    // Without since: the latest messages.
    let mut dave = server.connect().await;
    assert_eq!(ids(&dave.join("r", "dave").await["messages"]), [1, 2, 3, 4]);
}

#[tokio::test]
async fn recovery_says_truncated_when_messages_are_no_longer_kept() {
    let server = TestServer::start(with_chat(ChatConfig {
        retention_count: 3,
        ..ChatConfig::default()
    }))
    .await;
    let mut alice = server.connect().await;
    alice.join("r", "alice").await;
    for i in 1..=5 {
        alice.say("r", &format!("m{i}")).await;
    }
    let mut bob = server.connect().await;
    bob.send_json(json!({"action":"join","room":"r","since":1}))
        .await;
    let joined = bob.expect("joined").await;
    assert_eq!(ids(&joined["messages"]), [3, 4, 5]);
    assert_eq!(joined["truncated"], true);
    // A since beyond the last id (another database's ids): the latest, truncated.
    bob.send_json(json!({"action":"join","room":"r","since":99}))
        .await;
    let joined = bob.expect("joined").await;
    assert_eq!(ids(&joined["messages"]), [3, 4, 5]);
    assert_eq!(joined["truncated"], true);
    // Retention never reuses ids.
    assert_eq!(alice.expect("presence").await["event"], "join");
    assert_eq!(alice.say("r", "m6").await, 6);
}

#[tokio::test]
async fn recovery_of_more_than_the_limit_gives_the_newest_and_truncated() {
    let server = TestServer::start(with_chat(ChatConfig {
        history_default: 2,
        recovery_max: 3,
        ..ChatConfig::default()
    }))
    .await;
    let mut alice = server.connect().await;
    alice.join("r", "alice").await;
    for i in 1..=5 {
        alice.say("r", &format!("m{i}")).await;
    }
    let mut bob = server.connect().await;
    bob.send_json(json!({"action":"join","room":"r","since":0}))
        .await;
    let joined = bob.expect("joined").await;
    assert_eq!(ids(&joined["messages"]), [3, 4, 5]);
    assert_eq!(joined["truncated"], true);
    let mut carol = server.connect().await;
    assert_eq!(ids(&carol.join("r", "carol").await["messages"]), [4, 5]);
}

#[tokio::test]
async fn leave_acknowledges_and_tells_the_others() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    alice.join("r", "alice").await;
    let b = bob.join("r", "bob").await;
    alice.expect("presence").await;
    bob.send_json(json!({"action":"leave","room":"r"})).await;
    assert_eq!(bob.expect("left").await["room"], "r");
    let p = alice.expect("presence").await;
    assert_eq!(p["event"], "leave");
    assert_eq!(p["member"], b["you"]);
    bob.send_json(json!({"action":"send","room":"r","text":"still here?"}))
        .await;
    bob.expect_error("not_member", "send").await;
}

#[tokio::test]
async fn nick_renames_in_every_room() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    let mut carol = server.connect().await;
    alice.join("one", "alice").await;
    alice.join("two", "alice").await;
    bob.join("one", "bob").await;
    carol.join("two", "carol").await;
    alice.expect("presence").await; // bob joined one
    alice.expect("presence").await; // carol joined two

    alice
        .send_json(json!({"action":"nick","name":"  Alice ✨ "}))
        .await;
    let ack = alice.expect("nick").await;
    assert_eq!(ack["you"]["name"], "Alice ✨");
    assert_eq!(ack["previous"], "alice");
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let p = alice.expect("presence").await;
        assert_eq!(p["event"], "rename");
        rooms.push(p["room"].as_str().unwrap().to_owned());
    }
    rooms.sort();
    assert_eq!(rooms, ["one", "two"]);
    for (c, room) in [(&mut bob, "one"), (&mut carol, "two")] {
        let p = c.expect("presence").await;
        assert_eq!(p["room"], room);
        assert_eq!(p["event"], "rename");
        assert_eq!(p["member"]["name"], "Alice ✨");
        assert_eq!(p["previous"], "alice");
    }
    // Later messages carry the new name.
    alice.say("one", "hi").await;
    assert_eq!(bob.expect("message").await["from"]["name"], "Alice ✨");

    // Also before joining any room: only the acknowledgement.
    let mut dave = server.connect().await;
    dave.send_json(json!({"action":"nick","name":"dave"})).await;
    assert!(
        dave.expect("nick").await["previous"]
            .as_str()
            .unwrap()
            .starts_with("guest-")
    );
    assert_eq!(dave.join("one", "dave").await["you"]["name"], "dave");
}

#[tokio::test]
async fn who_lists_members_by_name() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    bob.join("r", "bob").await;
    alice.join("r", "alice").await;
    // Anyone may ask, member or not.
    let mut carol = server.connect().await;
    carol.send_json(json!({"action":"who","room":"r"})).await;
    let m = carol.expect("members").await;
    assert_eq!(m["room"], "r");
    assert_eq!(names(&m["members"]), ["alice", "bob"]);
    assert_eq!(m["members"][0]["connectionId"].as_str().unwrap().len(), 16);
    carol
        .send_json(json!({"action":"who","room":"empty"}))
        .await;
    assert_eq!(carol.expect("members").await["members"], json!([]));
}

#[tokio::test]
async fn disconnecting_leaves_every_room() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    alice.join("one", "alice").await;
    alice.join("two", "alice").await;
    let b = bob.join("one", "bob").await;
    bob.join("two", "bob").await;
    alice.expect("presence").await;
    alice.expect("presence").await;
    bob.close(1000, "bye").await;
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let p = alice.expect("presence").await;
        assert_eq!(p["event"], "leave");
        assert_eq!(p["member"], b["you"]);
        rooms.push(p["room"].as_str().unwrap().to_owned());
    }
    rooms.sort();
    assert_eq!(rooms, ["one", "two"]);
    alice.send_json(json!({"action":"who","room":"one"})).await;
    assert_eq!(names(&alice.expect("members").await["members"]), ["alice"]);
}

#[tokio::test]
async fn reactions_count_up_live_and_come_back_with_messages() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    alice.join("r", "alice").await;
    bob.join("r", "bob").await;
    alice.expect("presence").await;
    let id = alice.say("r", "clap for me").await;
    bob.expect("message").await;

    for expected in 1..=3 {
        // Like applause: the same person may clap again.
        bob.send_json(json!({"action":"react","room":"r","id":id,"emoji":"👏"}))
            .await;
        for c in [&mut alice, &mut bob] {
            let r = c.expect("reaction").await;
            assert_eq!(
                r,
                json!({"type":"reaction","room":"r","id":id,"emoji":"👏","count":expected})
            );
        }
    }
    alice
        .send_json(json!({"action":"react","room":"r","id":id,"emoji":"🎉"}))
        .await;
    assert_eq!(bob.expect("reaction").await["count"], 1);
    alice.expect("reaction").await;

    alice
        .send_json(json!({"action":"react","room":"r","id":99,"emoji":"👏"}))
        .await;
    alice.expect_error("unknown_message", "react").await;

    alice
        .send_json(json!({"action":"history","room":"r"}))
        .await;
    let h = alice.expect("history").await;
    assert_eq!(h["messages"][0]["reactions"], json!({"👏":3,"🎉":1}));
    let mut carol = server.connect().await;
    let joined = carol.join("r", "carol").await;
    assert_eq!(joined["messages"][0]["reactions"], json!({"👏":3,"🎉":1}));
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_connection_stays() {
    let server = TestServer::start(with_chat(ChatConfig {
        max_text_chars: 10,
        ..ChatConfig::default()
    }))
    .await;
    let mut c = server.connect().await;
    c.join("r", "alice").await;
    let cases = [
        (json!({"action":"join","room":"Lobby"}), "bad_room", "join"),
        (json!({"action":"join","room":"a b"}), "bad_room", "join"),
        (
            json!({"action":"join","room":"x".repeat(33)}),
            "bad_room",
            "join",
        ),
        (
            json!({"action":"join","room":"r","name":""}),
            "bad_name",
            "join",
        ),
        (
            json!({"action":"join","room":"r","name":"a\u{202e}b"}),
            "bad_name",
            "join",
        ),
        (
            json!({"action":"nick","name":"x".repeat(33)}),
            "bad_name",
            "nick",
        ),
        (
            json!({"action":"send","room":"r","text":"x".repeat(11)}),
            "text_too_long",
            "send",
        ),
        (json!({"action":"send","room":"r"}), "bad_request", "send"),
        (
            json!({"action":"send","room":"r","text":42}),
            "bad_request",
            "send",
        ),
        (
            json!({"action":"send","room":"r","text":"   "}),
            "bad_request",
            "send",
        ),
        (json!({"action":"join"}), "bad_request", "join"),
        (
            json!({"action":"join","room":"r","since":"1"}),
            "bad_request",
            "join",
        ),
        (
            json!({"action":"history","room":"r","limit":0}),
            "bad_request",
            "history",
        ),
        (
            json!({"action":"react","room":"r","id":-1,"emoji":"👏"}),
            "bad_request",
            "react",
        ),
        (
            json!({"action":"react","room":"r","id":1}),
            "bad_request",
            "react",
        ),
        (json!({"action":"nick"}), "bad_request", "nick"),
    ];
    for (body, code, action) in cases {
        c.send_json(body).await;
        c.expect_error(code, action).await;
    }
    // A refused `send` names its message.
    c.send_json(json!({"action":"send","room":"r","text":"x".repeat(11),"clientId":"c-7"}))
        .await;
    assert_eq!(
        c.expect_error("text_too_long", "send").await["clientId"],
        "c-7"
    );
    c.send_json(json!({"action":"send","room":"elsewhere","text":"hi","clientId":"c-8"}))
        .await;
    assert_eq!(
        c.expect_error("not_member", "send").await["clientId"],
        "c-8"
    );
    // The limit counts characters, not bytes.
    assert_eq!(c.say("r", &"é".repeat(10)).await, 1);
}

#[tokio::test]
async fn floods_are_rate_limited() {
    let server = TestServer::start(with_chat(ChatConfig {
        rate_per_sec: 1,
        rate_burst: 3,
        ..ChatConfig::default()
    }))
    .await;
    let mut c = server.connect().await;
    for _ in 0..20 {
        c.send_json(json!({"action":"who","room":"r"})).await;
    }
    let mut answered = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let v = c.recv_json().await;
        match v["type"].as_str() {
            Some("members") => answered += 1,
            Some("error") => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                assert_eq!(v["action"], "who");
                limited += 1;
            }
            _ => panic!("{v}"),
        }
    }
    assert!(answered >= 3, "the burst is served");
    assert!(limited >= 10, "a flood is refused: {answered} answered");
    // The articles' routes are not the chat's to limit.
    c.send(r#"{"action":"sendmessage","data":"still heard"}"#)
        .await;
    assert_eq!(c.recv().await, "still heard");
}

#[tokio::test]
async fn lobby_bridges_plain_clients_and_members() {
    let server = TestServer::start(config()).await;
    let mut plain = server.connect().await; // an articles-style client: never joins
    let plain_id = plain.chat_id().await;
    let mut alice = server.connect().await;
    let mut other = server.connect().await;
    alice.join("lobby", "alice").await;
    other.join("elsewhere", "other").await;

    // A member's message reaches plain clients as raw text.
    alice.say("lobby", "hi").await;
    assert_eq!(plain.recv().await, "alice: hi");

    // The articles' `message`: to everyone else; members get it as a lobby message.
    plain
        .send(r#"{"action":"sendmessage","message":"hello from wscat"}"#)
        .await;
    let m = alice.expect("message").await;
    assert_eq!(m["room"], "lobby");
    assert_eq!(m["id"], 2);
    assert_eq!(m["text"], "hello from wscat");
    assert_eq!(m["from"]["connectionId"], plain_id.as_str());
    assert!(m["from"]["name"].as_str().unwrap().starts_with("guest-"));

    // The articles' `data`: to everyone, the sender included.
    plain
        .send(r#"{"action":"sendMessage","data":"hello world"}"#)
        .await;
    assert_eq!(
        plain.recv().await,
        "hello world",
        "the sender got its own `data` and not its `message` before it"
    );
    assert_eq!(alice.expect("message").await["text"], "hello world");

    // Both are in the lobby's history.
    alice
        .send_json(json!({"action":"history","room":"lobby"}))
        .await;
    let h = alice.expect("history").await;
    assert_eq!(
        texts(&h["messages"]),
        ["hi", "hello from wscat", "hello world"]
    );

    // Plain clients get nothing from other rooms and no presence: the next frame the plain
    // client sees is the next lobby message.
    other.say("elsewhere", "not for the lobby").await;
    let mut bob = server.connect().await;
    bob.join("lobby", "bob").await;
    alice.expect("presence").await;
    bob.say("lobby", "second").await;
    assert_eq!(plain.recv().await, "bob: second");
    // The member in another room got none of the lobby's messages either.
    other
        .send_json(json!({"action":"who","room":"elsewhere"}))
        .await;
    other.expect("members").await;
}

#[tokio::test]
async fn rooms_lists_rooms_with_messages_or_members() {
    let server = TestServer::start(config()).await;
    let mut c = server.connect().await;
    c.send_json(json!({"action":"rooms"})).await;
    let r = c.expect("rooms").await;
    assert_eq!(r["rooms"], json!([{"room":"lobby","members":0,"lastId":0}]));
    c.join("zeta", "alice").await;
    c.say("zeta", "hi").await;
    c.join("alpha", "alice").await;
    c.send_json(json!({"action":"leave","room":"zeta"})).await;
    c.expect("left").await;
    c.send_json(json!({"action":"rooms"})).await;
    let r = c.expect("rooms").await;
    assert_eq!(
        r["rooms"],
        json!([
            {"room":"lobby","members":0,"lastId":0},
            {"room":"alpha","members":1,"lastId":0},
            {"room":"zeta","members":0,"lastId":1},
        ])
    );
}

#[tokio::test]
async fn history_ids_and_reactions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), ChatConfig::default()).await;
    let mut alice = server.connect().await;
    alice.join("r", "alice").await;
    let first = alice.say("r", "before the restart").await;
    alice.say("r", "second").await;
    alice
        .send_json(json!({"action":"react","room":"r","id":first,"emoji":"👏"}))
        .await;
    alice.expect("reaction").await;
    alice.close(1000, "bye").await;
    server.stop().await;

    let server = ChatServer::start(dir.path(), ChatConfig::default()).await;
    let mut bob = server.connect().await;
    let joined = bob.join("r", "bob").await;
    assert_eq!(joined["lastId"], 2);
    assert_eq!(ids(&joined["messages"]), [1, 2]);
    assert_eq!(joined["messages"][0]["text"], "before the restart");
    assert_eq!(joined["messages"][0]["from"]["name"], "alice");
    assert_eq!(joined["messages"][0]["reactions"], json!({"👏":1}));
    assert_eq!(bob.say("r", "after").await, 3, "ids continue");
    bob.send_json(json!({"action":"react","room":"r","id":first,"emoji":"👏"}))
        .await;
    assert_eq!(bob.expect("reaction").await["count"], 2);
    bob.close(1000, "bye").await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), ChatConfig::default()).await;
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..config()
    };
    let error = switchboard::Server::new(config).unwrap_err().to_string();
    assert!(error.contains("in use by another process"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn the_browser_ui_is_served_at_the_root() {
    let server = TestServer::start(config()).await;
    let page = reqwest::get(server.http("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let body = page.text().await.unwrap();
    assert!(body.contains(r#"<meta name="switchboard-stage" content="dev">"#));
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let r = reqwest::get(server.http(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    assert_eq!(
        reqwest::get(server.http("/ui/nope.js"))
            .await
            .unwrap()
            .status(),
        404
    );

    // Another API (here the echo app) has no chat UI.
    let echo = TestServer::start(Config {
        app: switchboard::config::BuiltinApp::Echo,
        ..config()
    })
    .await;
    assert_eq!(reqwest::get(echo.http("/")).await.unwrap().status(), 404);
}

#[test]
fn the_documented_chat_configuration_is_the_default() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap();
    let start = doc
        .find("```toml\n[chat]")
        .expect("docs/protocol.md has a [chat] example")
        + 8;
    let toml = &doc[start..start + doc[start..].find("```").unwrap()];
    let file = switchboard::config::FileConfig::parse(toml).unwrap();
    assert_eq!(file.chat, ChatConfig::default(), "{toml}");
}
