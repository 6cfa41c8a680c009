//! The core proxy against real Redis: any client works through redsplit unchanged.

mod binary;
mod commands;
mod connection_state;
mod faults;
