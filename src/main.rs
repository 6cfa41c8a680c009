//! The `redsplit` command.
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    }
    match cli.command {
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
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if cfg.workers > 0 {
                rt.worker_threads(cfg.workers);
            }
            let rt = match rt.enable_all().build() {
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
