//! The integration tests, as one test binary: the harness (`common`) is compiled and
//! linked once, and every test file below is a module of this crate.
//!
//! A new test file goes in this folder and gets a `mod` line here (kept sorted); it uses
//! the harness with `use crate::common::*;` (not `mod common;`). Fixtures stay outside:
//! `tests/config/` (configuration files) and `tests/support/` (shared with `fuzz/`).
//!
//! Run one file's tests with a filter on its module: `cargo test --test it core::`.

// Test code: unwrap, panic and indexing fail the test; `unsafe` is libc calls (signals, rlimits).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    unsafe_code
)]

mod common;

mod admin;
mod clients;
mod cluster;
mod command_table;
mod config;
mod container;
mod core;
mod cross_client_order;
mod deploy;
mod differential;
mod hardening;
mod harness;
mod hedge;
mod lag;
mod protocol_props;
mod reload;
mod ryw;
mod sentinel;
mod tls;
mod tracking_redirect;
mod transparency;
