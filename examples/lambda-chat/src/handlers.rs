//! The four handlers. Each one is a Lambda function of its own on AWS.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_sdk_apigatewaymanagement::primitives::{Blob, DateTimeFormat};
use lambda_runtime::{Error, LambdaEvent, tracing};
use serde_json::{Value, json};

use crate::management;
use crate::table::Table;

type Request = LambdaEvent<ApiGatewayWebsocketProxyRequest>;

fn reply(status: i64, body: &str) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.body = Some(Body::Text(body.to_owned()));
    response
}

fn connection_id(request: &ApiGatewayWebsocketProxyRequest) -> Result<String, Error> {
    request
        .request_context
        .connection_id
        .clone()
        .ok_or_else(|| "the event has no connectionId".into())
}

/// `$connect`: remembers the connection.
pub async fn connect(event: Request) -> Result<ApiGatewayProxyResponse, Error> {
    Table::from_env()?.put(&connection_id(&event.payload)?)?;
    Ok(reply(200, "Connected."))
}

/// `$disconnect`: forgets the connection.
pub async fn disconnect(event: Request) -> Result<ApiGatewayProxyResponse, Error> {
    Table::from_env()?.delete(&connection_id(&event.payload)?)?;
    Ok(reply(200, "Disconnected."))
}

/// `sendmessage`: `{"action": "sendmessage", "message": "..."}` to everyone else.
pub async fn send_message(event: Request) -> Result<ApiGatewayProxyResponse, Error> {
    let request = &event.payload;
    let sender = connection_id(request)?;
    let body: Value = serde_json::from_str(request.body.as_deref().unwrap_or("{}"))?;
    let message = match &body["message"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let table = Table::from_env()?;
    let client = management::client(&management::endpoint(request));
    let mut failed = 0;
    for id in table.scan()? {
        if id == sender {
            continue;
        }
        let sent = client
            .post_to_connection()
            .connection_id(&id)
            .data(Blob::new(message.as_bytes()))
            .send()
            .await;
        match sent {
            Ok(_) => {}
            // The client left without `$disconnect` running: forget it.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_gone_exception()) => {
                tracing::info!(connection_id = %id, "gone; deleting it from the table");
                table.delete(&id)?;
            }
            Err(e) => {
                tracing::error!(connection_id = %id, error = %aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&e), "post failed");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} posts failed").into());
    }
    Ok(reply(200, "Data sent."))
}

/// `$default`: how to use the chat, with the sender's connection info.
pub async fn default(event: Request) -> Result<ApiGatewayProxyResponse, Error> {
    let request = &event.payload;
    let id = connection_id(request)?;
    let client = management::client(&management::endpoint(request));
    let info = client.get_connection().connection_id(&id).send().await?;
    let time = |t: Option<&aws_sdk_apigatewaymanagement::primitives::DateTime>| {
        t.and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
    };
    let identity = info.identity();
    let info = json!({
        "ConnectedAt": time(info.connected_at()),
        "Identity": {
            "SourceIp": identity.and_then(|i| i.source_ip()),
            "UserAgent": identity.and_then(|i| i.user_agent()),
        },
        "LastActiveAt": time(info.last_active_at()),
        "connectionID": id,
    });
    let text = format!("Use the sendmessage route to send a message. Your info: {info}");
    client
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new(text.into_bytes()))
        .send()
        .await?;
    Ok(reply(200, "Data sent."))
}
