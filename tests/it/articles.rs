//! The two articles' chat, as their clients use it.

use crate::common::*;

#[tokio::test]
async fn article_two_sendmessage_reaches_everyone_else() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    let mut carol = server.connect().await;
    // Make sure all three are in the table.
    for c in [&mut alice, &mut bob, &mut carol] {
        c.chat_id().await;
    }
    alice
        .send(r#"{"action":"sendmessage","message":"hello"}"#)
        .await;
    assert_eq!(bob.recv().await, "hello");
    assert_eq!(carol.recv().await, "hello");
    // Alice did not get her own message: the next frame she sees is the next broadcast.
    bob.send(r#"{"action":"sendmessage","message":"from bob"}"#)
        .await;
    assert_eq!(alice.recv().await, "from bob");
    assert_eq!(carol.recv().await, "from bob");
}

#[tokio::test]
async fn article_one_and_aws_samples_reach_everyone_including_the_sender() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    alice.chat_id().await;
    bob.chat_id().await;
    alice
        .send(r#"{ "action": "sendMessage", "data": "hello world" }"#)
        .await;
    assert_eq!(alice.recv().await, "hello world");
    assert_eq!(bob.recv().await, "hello world");
    bob.send(r#"{"action":"sendmessage","data":"hi"}"#).await;
    assert_eq!(alice.recv().await, "hi");
    assert_eq!(bob.recv().await, "hi");
}

#[tokio::test]
async fn unknown_actions_get_the_tutorial_reply() {
    let server = TestServer::start(config()).await;
    let mut c = server.connect().await;
    for frame in [
        r#"{"action":"nope"}"#,
        "plain text",
        r#"{"action":"SENDMESSAGE"}"#,
    ] {
        c.send(frame).await;
        let reply = c.recv().await;
        let json = reply
            .strip_prefix("Use the sendmessage route to send a message. Your info: ")
            .unwrap_or_else(|| panic!("{reply}"));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert!(v["ConnectedAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["Identity"]["SourceIp"], "127.0.0.1");
        assert!(v["LastActiveAt"].is_string());
        assert_eq!(v["connectionID"].as_str().unwrap().len(), 16);
    }
}

#[tokio::test]
async fn sendmessage_without_content_is_an_error_to_the_sender() {
    let server = TestServer::start(config()).await;
    let mut c = server.connect().await;
    c.send(r#"{"action":"sendmessage"}"#).await;
    assert!(
        c.recv()
            .await
            .starts_with("Error: a sendmessage frame needs")
    );
}

#[tokio::test]
async fn departed_clients_leave_the_table() {
    let server = TestServer::start(config()).await;
    let mut alice = server.connect().await;
    alice.chat_id().await;
    {
        let mut bob = server.connect().await;
        bob.chat_id().await;
        bob.close(1000, "bye").await;
    }
    // Bob's $disconnect removed him; a broadcast reaches only Alice and nobody errors.
    alice
        .send(r#"{"action":"sendmessage","data":"still here"}"#)
        .await;
    assert_eq!(alice.recv().await, "still here");
}
