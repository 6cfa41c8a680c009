//! Regenerate the static command table from a running Redis server:
//!
//! ```text
//! cargo run --example gen_commands -- 127.0.0.1:6379 > src/commands/table.rs
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: gen_commands HOST:PORT > src/commands/table.rs");
        return ExitCode::from(2);
    };
    let reply = match redsplit::commands::gen::fetch_command(&addr) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gen_commands: COMMAND on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match redsplit::commands::gen::render(&reply) {
        Ok(src) => {
            print!("{src}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_commands: {e}");
            ExitCode::FAILURE
        }
    }
}
