//! One binary for the four functions: `_HANDLER` (the function's handler setting on AWS) picks
//! the handler.

use lambda_chat::handlers;
use lambda_runtime::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    match handler.as_str() {
        "connect" => run(service_fn(handlers::connect)).await,
        "disconnect" => run(service_fn(handlers::disconnect)).await,
        "sendmessage" => run(service_fn(handlers::send_message)).await,
        "default" => run(service_fn(handlers::default)).await,
        other => Err(format!(
            "unknown handler {other:?}: set _HANDLER to connect, disconnect, sendmessage or default"
        )
        .into()),
    }
}
