//! redsplit: a read/write-splitting Redis proxy.
#![warn(missing_docs)]

pub mod commands;
pub mod config;
pub mod protocol;
