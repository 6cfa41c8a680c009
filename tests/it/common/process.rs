//! Child processes: started so that they die with the test process, killed on drop,
//! started on a free port with retries; and [`run_program`] for other programs.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, POLL_INTERVAL, START_TIMEOUT};

/// How many fresh ports a start tries when the process exits before listening (usually
/// because another process took the port between [`free_port`] and its bind).
const START_ATTEMPTS: usize = 5;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Starts `cmd` so that it dies with the test process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, and test
/// threads (or tokio blocking threads) come and go; so children are forked by one
/// harness thread that lives as long as the process. Drop impls kill processes in the
/// normal case; this covers a test binary that is itself killed (a nextest timeout,
/// Ctrl-C), which would otherwise leak servers.
pub(super) fn spawn(mut cmd: Command) -> Child {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        tx
    });
    let parent = libc::pid_t::try_from(std::process::id()).expect("pid fits pid_t");
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .expect("spawner thread is alive");
    reply_rx
        .recv()
        .expect("spawner thread replies")
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// A child process that is SIGKILLed and reaped when dropped.
pub(super) struct Process {
    child: Option<Child>,
}

impl Process {
    pub(super) fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True once the process has exited (it is then reaped).
    fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The exit status once the process has exited, else `None` (still running).
    pub(super) fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("process was not killed");
        child.try_wait().expect("wait for a child")
    }

    /// SIGKILL, then wait until the process is gone. No-op if already dead.
    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(super) fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("process is running");
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: plain syscall on our own child, which is not yet reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            io::Error::last_os_error()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T` for stopped, ...).
pub(super) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may contain spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Inodes of the sockets listening on 127.0.0.1/0.0.0.0 `port`, from `/proc/net/tcp`.
fn listening_inodes(port: u16) -> HashSet<u64> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return HashSet::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == "0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Whether process `pid` itself holds a socket listening on `port`: proof that a start
/// won its port rather than finding someone else's server there.
pub(super) fn owns_listener(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| {
                let target = target.to_string_lossy().into_owned();
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// The last lines of every `*.log` file in `dir` (the process's own log, and
/// `output.log` with what it printed before opening it), for failure messages.
pub(super) fn log_tails(dir: &Path) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    let mut out = String::new();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let _ = writeln!(out, "--- last lines of {} ---", log.display());
        for line in &lines[lines.len().saturating_sub(20)..] {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Why a launched process is not serving.
pub(super) enum StartError {
    /// It exited: most likely its port was taken. Worth a retry on another port.
    Exited,
    /// It is running but did not become ready in time.
    TimedOut,
}

/// Launches with `launch` and polls `ready` until it holds, the process exits, or
/// [`START_TIMEOUT`] passes.
pub(super) fn launch_and_wait(
    launch: impl FnOnce() -> Child,
    mut ready: impl FnMut(u32) -> bool,
) -> Result<Process, (Process, StartError)> {
    let mut process = Process::new(launch());
    let pid = process.pid().expect("just started");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if process.has_exited() {
            return Err((process, StartError::Exited));
        }
        if ready(pid) {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            return Err((process, StartError::TimedOut));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Starts a server on a free port, retrying on a new port when the process exits before
/// it is ready. `launch(port)` starts it; `ready(port, pid)` says it serves.
pub(super) fn start_on_free_port(
    what: &str,
    dir: &Path,
    mut launch: impl FnMut(u16) -> Child,
    mut ready: impl FnMut(u16, u32) -> bool,
) -> (u16, Process) {
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        match launch_and_wait(|| launch(port), |pid| ready(port, pid)) {
            Ok(process) => return (port, process),
            Err((_, StartError::Exited)) if attempt < START_ATTEMPTS => continue,
            Err((mut process, error)) => {
                process.kill();
                let how = match error {
                    StartError::Exited => "exited before serving",
                    StartError::TimedOut => "did not become ready",
                };
                panic!("{what} on port {port} {how}\n{}", log_tails(dir));
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// No stdin; stdout and stderr (where a process complains before its log is open) go to
/// `output.log` in `dir`, which each launch starts afresh.
pub(super) fn quiet(cmd: &mut Command, dir: &Path) {
    let out = std::fs::File::create(dir.join("output.log")).expect("create output.log");
    let err = out.try_clone().expect("clone output.log handle");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
}

// ---------------------------------------------------------------------------------------
// Other programs
// ---------------------------------------------------------------------------------------

/// What a program run by [`run_program`] left behind.
pub struct Finished {
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// Runs `cmd` to its end as a child that dies with the test process, stdin closed and
/// its output captured (in files of a temp dir, so that no pipe fills up).
///
/// # Panics
/// When it cannot start, or still runs after `timeout`: it is killed, and the message
/// names `what` and carries its output so far.
pub fn run_program(what: &str, mut cmd: Command, timeout: Duration) -> Finished {
    let dir = TempDir::new().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut process = Process::new(spawn(cmd));
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = process.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            process.kill();
            panic!(
                "{what} still runs after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                read(&out_path),
                read(&err_path)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    Finished {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}
