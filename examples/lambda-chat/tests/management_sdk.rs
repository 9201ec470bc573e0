//! The Rust AWS SDK's `apigatewaymanagement` client against a switchboard server: post, get,
//! delete, and `GoneException` for a connection that has left.

#[path = "../../../tests/it/common.rs"]
mod common;

use aws_sdk_apigatewaymanagement::primitives::Blob;
use common::*;

/// The handlers' client for the server's endpoint (credentials and region from the
/// environment, empty here: switchboard accepts any signature from loopback).
fn sdk(server: &TestServer) -> aws_sdk_apigatewaymanagement::Client {
    lambda_chat::management::client(&server.endpoint())
}

#[tokio::test]
async fn post_get_delete_and_gone_through_the_rust_sdk() {
    let server = TestServer::start(config()).await;
    let mut c = server.connect().await;
    let id = c.chat_id().await;
    let api = sdk(&server);

    api.post_to_connection()
        .connection_id(&id)
        .data(Blob::new("hello from the Rust SDK"))
        .send()
        .await
        .unwrap();
    assert_eq!(c.recv().await, "hello from the Rust SDK");

    let info = api
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap();
    assert!(info.connected_at().is_some());
    assert!(info.last_active_at().unwrap() >= info.connected_at().unwrap());
    assert_eq!(info.identity().unwrap().source_ip(), Some("127.0.0.1"));

    api.delete_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(c.expect_close().await.0, 1000);

    let gone = api
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new("anyone?"))
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error().unwrap().is_gone_exception(),
        "{gone:?}"
    );
    let gone = api
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error().unwrap().is_gone_exception(),
        "{gone:?}"
    );
    let gone = api
        .delete_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error().unwrap().is_gone_exception(),
        "{gone:?}"
    );
}
