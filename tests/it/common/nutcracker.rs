//! [`Nutcracker`]: twemproxy in front of one Redis, the baseline for comparisons.

use std::net::SocketAddr;
use std::process::Command;

use tempfile::TempDir;

use super::process::{owns_listener, quiet, spawn, start_on_free_port, Process};
use super::{free_port, local_addr};

/// twemproxy (`nutcracker`) in front of one Redis, for benchmarks and comparisons.
/// Killed on drop.
pub struct Nutcracker {
    _process: Process,
    port: u16,

    /// Holds the config, pid file and log.
    _dir: TempDir,
}

impl Nutcracker {
    /// Starts nutcracker with one pool forwarding to `master` (`redis: true`, one server
    /// connection, preconnected); returns once it listens on its proxy and stats ports.
    pub fn start(master: SocketAddr) -> Nutcracker {
        let dir = tempfile::Builder::new()
            .prefix("redsplit-nutcracker-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("nutcracker.yml");
        let log = dir.path().join("nutcracker.log");
        let stats_port = std::cell::Cell::new(0);
        let (port, process) = start_on_free_port(
            "nutcracker",
            dir.path(),
            |port| {
                stats_port.set(free_port());
                let text = format!(
                    "redsplit:\n  \
                       listen: 127.0.0.1:{port}\n  \
                       hash: fnv1a_64\n  \
                       distribution: ketama\n  \
                       redis: true\n  \
                       preconnect: true\n  \
                       auto_eject_hosts: false\n  \
                       server_connections: 1\n  \
                       servers:\n    \
                         - {master}:1\n"
                );
                std::fs::write(&conf, text).expect("write nutcracker.yml");
                let mut cmd = Command::new("nutcracker");
                cmd.current_dir(dir.path())
                    .arg("--conf-file")
                    .arg(&conf)
                    .arg("--output")
                    .arg(&log)
                    .arg("--pid-file")
                    .arg(dir.path().join("nutcracker.pid"))
                    .args(["--stats-addr", "127.0.0.1"])
                    .args(["--stats-port", &stats_port.get().to_string()])
                    .args(["--verbose", "4"]);
                quiet(&mut cmd, dir.path());
                spawn(cmd)
            },
            |port, pid| owns_listener(pid, port) && owns_listener(pid, stats_port.get()),
        );
        Nutcracker {
            _process: process,
            port,

            _dir: dir,
        }
    }

    /// The proxy address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        local_addr(self.port)
    }
}
