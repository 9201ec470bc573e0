//! switchboard: a self-hosted WebSocket gateway compatible with AWS API Gateway WebSocket APIs.
//!
//! Start with [`run`]: it serves an already bound listener until a shutdown future completes,
//! which is how the binary runs and how tests start a real server on port 0.
#![forbid(unsafe_code)]

pub mod api;
pub mod apps;
pub mod authorizer;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod deferred;
pub mod event;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod inspector;
pub mod integration;
pub mod limits;
pub mod management;
pub mod metrics;
pub mod selection;
pub mod server;
pub mod sigv4;
pub mod time;
pub mod tls;

pub use config::Config;
pub use server::{Error, Server, run};
