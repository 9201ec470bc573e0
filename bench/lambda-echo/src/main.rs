//! A Lambda function (a custom runtime built on `lambda_runtime`) that answers every
//! WebSocket event with its own body. It does nothing else, so that measuring a two-way route
//! behind it measures what an invocation costs: the event, the Runtime API round trip, the
//! response. Deployed as a `provided.al2` function's `bootstrap`.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};

async fn echo(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let body = event.payload.get("body").cloned().unwrap_or(Value::Null);
    Ok(json!({ "statusCode": 200, "body": body }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(echo)).await
}
