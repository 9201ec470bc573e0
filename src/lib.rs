//! switchboard: a self-hosted WebSocket gateway compatible with AWS API Gateway WebSocket APIs.
//!
//! Start with [`run`]: it serves an already bound listener until a shutdown future completes,
//! which is how the binary runs and how tests start a real server on port 0.
#![forbid(unsafe_code)]

pub mod api;
pub mod apps;
mod authorizer;
pub mod cli;
mod cluster;
pub mod config;
mod deferred;
mod dynamodb;
pub mod event;
pub mod gateway;
mod http;
mod ids;
pub mod inspector;
pub mod integration;
mod limits;
pub mod management;
mod metrics;
mod selection;
mod server;
mod sigv4;
pub mod template;
mod time;
mod tls;
mod workers;

pub use config::Config;
pub use http::router;
pub use ids::Id;
pub use server::{Error, Server, bind, run};
