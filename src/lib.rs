//! redsplit: a read/write-splitting Redis proxy.
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod commands;
pub mod config;
pub mod introspect;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod reload;
pub mod replication;
pub mod reply;
pub mod router;
pub mod sentinel;
pub mod server;
pub mod session;
pub mod topology;
