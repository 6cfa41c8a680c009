//! The proxy under test: redsplit in this process ([`ProxyUnderTest`]) or as its binary
//! ([`ProxyBinary`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::client::connect;
use super::memory::{shared_memory, SharedMemory};
use super::process::{spawn, Process};
use super::redis_server::{RedisServer, ReplicaSet};
use super::{wait_until, SYNC_TIMEOUT};

// ---------------------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------------------

/// A redsplit instance running in this test process, on its own runtime, listening on a
/// free port. Stopped (gracefully, briefly) on drop.
pub struct ProxyUnderTest {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The admin endpoint, if enabled.
    pub admin_addr: Option<SocketAddr>,
    proxy: Arc<redsplit::proxy::Proxy>,
    /// Tells the proxy's thread to shut the proxy down.
    stop: Option<std::sync::mpsc::Sender<()>>,
    /// The thread driving the proxy's runtime (built as the binary builds it, from
    /// `workers`), in `block_on` until told to stop.
    thread: Option<std::thread::JoinHandle<()>>,
    /// The proxy allocates in this process: no memory measurement runs meanwhile.
    _memory: SharedMemory,
}

impl ProxyUnderTest {
    /// Start with a YAML configuration; `listen` and `admin.listen` default to port 0.
    pub fn start(yaml: &str) -> ProxyUnderTest {
        let mut cfg = redsplit::config::Config::from_yaml(yaml)
            .unwrap_or_else(|e| panic!("test config: {e}"));
        if !yaml.contains("\nlisten:") && !yaml.starts_with("listen:") {
            cfg.listen = "127.0.0.1:0".into();
        }
        if !yaml.contains("admin:") {
            cfg.admin.listen = "127.0.0.1:0".into();
        }
        Self::start_config(cfg)
    }

    /// Start from a configuration file (reloads watch it).
    pub fn start_file(path: &Path) -> ProxyUnderTest {
        let cfg =
            redsplit::config::Config::load(path).unwrap_or_else(|e| panic!("test config: {e}"));
        Self::start_with_path(cfg, Some(path.to_path_buf()))
    }

    /// Start with a configuration value.
    pub fn start_config(cfg: redsplit::config::Config) -> ProxyUnderTest {
        Self::start_with_path(cfg, None)
    }

    fn start_with_path(cfg: redsplit::config::Config, path: Option<PathBuf>) -> ProxyUnderTest {
        let memory = shared_memory();
        // RUST_LOG=redsplit=debug shows the proxy's logs in a test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let rt = redsplit::server::runtime(cfg.workers).expect("runtime");
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let handle = match redsplit::server::start(cfg, path).await {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let _ = started_tx.send(Ok((handle.addr, handle.admin_addr, handle.proxy.clone())));
                // Wait for the stop on a blocking thread: this one runs the proxy.
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                handle.shutdown(Duration::from_millis(200)).await;
            });
            rt.shutdown_background();
        });
        let (addr, admin_addr, proxy) = started_rx
            .recv()
            .expect("the proxy's thread answers")
            .unwrap_or_else(|e| panic!("proxy starts: {e}"));
        ProxyUnderTest {
            addr,
            admin_addr,
            proxy,
            stop: Some(stop),
            thread: Some(thread),
            _memory: memory,
        }
    }

    /// The shared state (view, metrics, settings).
    pub fn state(&self) -> &Arc<redsplit::proxy::Proxy> {
        &self.proxy
    }

    /// A client connection to the proxy.
    pub fn conn(&self) -> redis::Connection {
        connect(self.addr)
    }

    /// Wait until the monitor sees the master up and `replicas` healthy replicas.
    pub fn wait_healthy(&self, replicas: usize) {
        let state = self.state().clone();
        wait_until("the proxy sees a healthy topology", SYNC_TIMEOUT, || {
            let v = state.view.load();
            v.master_up()
                && v.replicas
                    .iter()
                    .filter(|r| r.health == redsplit::topology::Health::Ok)
                    .count()
                    >= replicas
        });
    }

    /// Wait until `replicas` replicas are in the read pool of budget 0.
    pub fn wait_in_pool(&self, replicas: usize) {
        let state = self.state().clone();
        wait_until("replicas join the read pool", SYNC_TIMEOUT, || {
            let v = state.view.load();
            v.master_up() && v.replicas.iter().filter(|r| r.in_pool & 1 == 1).count() >= replicas
        });
    }
}

impl Drop for ProxyUnderTest {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A proxy over `master` alone (no replicas), the master known to be healthy.
pub fn proxy_over(master: SocketAddr) -> ProxyUnderTest {
    let proxy = ProxyUnderTest::start(&format!(
        "backend:\n  master: \"{master}\"\n  replicas: []\n"
    ));
    proxy.wait_healthy(0);
    proxy
}

/// A Redis and a proxy over it alone ([`proxy_over`]).
pub fn master_only() -> (RedisServer, ProxyUnderTest) {
    let master = RedisServer::start();
    let proxy = proxy_over(master.addr());
    (master, proxy)
}

/// A minimal proxy configuration for a replica set.
pub fn proxy_yaml(set: &ReplicaSet, extra: &str) -> String {
    let replicas: Vec<String> = set
        .replicas
        .iter()
        .map(|r| format!("\"{}\"", r.addr()))
        .collect();
    format!(
        "backend:\n  master: \"{}\"\n  replicas: [{}]\n{}",
        set.master.addr(),
        replicas.join(", "),
        extra
    )
}

// ---------------------------------------------------------------------------------------
// The proxy binary
// ---------------------------------------------------------------------------------------

/// The `redsplit` binary of this build run as a child process, for what only the binary
/// does (signals, exit status). Like every process of the harness it is SIGKILLed when
/// dropped and when the test process dies; its output goes to `output.log` in its dir.
pub struct ProxyBinary {
    process: Process,
    dir: PathBuf,
}

impl ProxyBinary {
    /// `redsplit run --config <config>`, its output in the config file's directory.
    pub fn run(config: &Path) -> ProxyBinary {
        ProxyBinary::run_with(config, &[])
    }

    /// `redsplit <args> run --config <config>`: stdout to `stdout.log` and stderr to
    /// `output.log`, in the config file's directory.
    pub fn run_with(config: &Path, args: &[&str]) -> ProxyBinary {
        let dir = config
            .parent()
            .expect("the config file is in a directory")
            .to_owned();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redsplit"));
        cmd.args(args).arg("run").arg("--config").arg(config);
        let out = std::fs::File::create(dir.join("stdout.log")).expect("create stdout.log");
        let err = std::fs::File::create(dir.join("output.log")).expect("create output.log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        ProxyBinary {
            process: Process::new(spawn(cmd)),
            dir,
        }
    }

    /// Sends `signal` (`libc::SIGHUP`, `libc::SIGTERM`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    /// Waits until the process exits and returns its status.
    ///
    /// # Panics
    /// When it still runs after `timeout` (the message carries its output).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut status = None;
        wait_until("the redsplit binary exits", timeout, || {
            status = self.process.try_wait();
            status.is_some()
        });
        status.expect("exited")
    }

    /// What it wrote to stderr so far (its logs).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("output.log")).unwrap_or_default()
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }
}
