//! The chat of the AWS API Gateway WebSocket tutorial, as four Lambda functions in Rust.
//!
//! The same code deploys to AWS (runtime `provided.al2023`, one function per handler with the
//! handler name in `_HANDLER`) and runs under switchboard from `examples/lambda-chat.toml`:
//! - `connect` (`$connect`): puts the connection id in the table;
//! - `disconnect` (`$disconnect`): deletes it;
//! - `sendmessage`: posts the frame's `message` to every other connection, deleting ids that
//!   answer `GoneException` (410);
//! - `default` (`$default`): tells the sender how to use the chat, with its connection info
//!   from `GetConnection`.
//!
//! The connection table is a directory (`CONNECTIONS_DIR`) with one file per connection id,
//! in place of the tutorial's DynamoDB table: every process of every function sees it, and
//! each put, delete and scan is one file-system call.

pub mod handlers;
pub mod management;
pub mod table;
