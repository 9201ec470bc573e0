//! Every integration test in one binary: one build and one link of the crate instead of one per
//! file. Each test starts the real server (in-process on port 0, or the real binary) and drives it
//! with real clients.
//!
//! A new area of tests is a file here plus a `mod` line below (in alphabetical order); its tests
//! are named `file::test` (`cargo nextest run -E 'test(/^file::/)'` runs one area). Shared
//! harnesses are `common` (servers, clients, recorders, Redis), `chat_common` (the built-in chat)
//! and `integrations_common` (HTTP backends, API files, log capture): use them rather than
//! writing another copy. Non-Rust fixtures stay in `tests/browser/`, `tests/e2e/`,
//! `tests/fixtures/` and `tests/functions/`.

mod chat_common;
mod common;
mod integrations_common;

mod apps;
mod articles;
mod authorizer;
mod bad_input;
mod bench;
mod browser;
mod chat;
mod chat_durability;
mod cluster;
mod cluster_lb;
mod cluster_stall;
mod config;
mod conformance;
mod dynamodb;
mod e2e;
mod gateway;
mod inspector;
mod integrations;
mod integrations_lambda;
mod integrations_python;
mod limits;
mod management;
mod observability;
mod shutdown;
mod tls;
mod workers;
