//! Built-in APIs: apps that are clients of the gateway like any Lambda handler would be.
//!
//! They receive proxy events through the [`Integration`](crate::integration::Integration)
//! trait and reach clients only through the [`ManagementApi`](crate::management::ManagementApi).

pub mod chat;
