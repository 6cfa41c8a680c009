//! The `redsplit` command.
use clap::{Parser, Subcommand};

use std::path::PathBuf;

/// jemalloc, as in Redis: size classes keep the many small, long-lived, cache-aligned
/// objects a proxy holds per client connection compact, where glibc's malloc leaves a
/// hole beside each aligned one; the janitor returns freed pages to the system.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A read/write-splitting Redis proxy that routes each read to a replica only when its
/// data is provably fresh enough.
#[derive(Parser)]
#[command(name = "redsplit", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration file without starting; exits non-zero on error.
    Check {
        /// The configuration file.
        #[arg(default_value = "proxy.yaml")]
        file: PathBuf,
    },
    /// Ask a running proxy's admin endpoint for /healthz; exits non-zero unless it
    /// answers 200 within 2 s (for container health checks).
    Healthcheck {
        /// The configuration file whose `admin.listen` to ask.
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
        /// Ask this address (host:port) instead.
        #[arg(long)]
        addr: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr in both formats; colour only when stderr is a terminal.
    if cli.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    match cli.command {
        Command::Healthcheck { config, addr } => match healthcheck(&config, addr) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Check { file } => match redsplit::config::Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let cfg = match redsplit::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let rt = match redsplit::server::runtime(cfg.workers) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(redsplit::server::run(cfg, Some(config))) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// GET /healthz on the admin endpoint.
fn healthcheck(config: &std::path::Path, addr: Option<String>) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = match addr {
        Some(a) => a,
        None => {
            let cfg = redsplit::config::Config::load(config).map_err(|e| e.to_string())?;
            if cfg.admin.listen.is_empty() {
                return Err("the admin endpoint is disabled (admin.listen is empty)".into());
            }
            // A wildcard listen address is reached on loopback.
            cfg.admin
                .listen
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:")
        }
    };
    let timeout = std::time::Duration::from_secs(2);
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s =
        std::net::TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    let status = reply.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!("{addr} answered {status:?}"))
    }
}
