//! The runtimes of the client programs (Python, Node, Go): checked for, with what to
//! install when missing, and the variants that run on them.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{clients_dir, Program, Variant, CACHE_CHECKED, CACHE_RESP3_ONLY};

/// The output of `program args…`, or why it cannot run.
fn output_of(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("`{program}` cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The exact version pinned for `package` in a `package==version` requirements file.
fn pinned_pip(file: &Path, package: &str) -> String {
    let text = std::fs::read_to_string(file).expect("requirements.txt");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{package}==")))
        .unwrap_or_else(|| panic!("{} pins no {package}==", file.display()))
        .to_owned()
}

/// The `"version"` field of a `package.json`.
fn json_version(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let at = text.find("\"version\"")?;
    let rest = text.get(at + "\"version\"".len()..)?;
    let start = rest.find('"')? + 1;
    let len = rest.get(start..)?.find('"')?;
    rest.get(start..start + len).map(str::to_owned)
}

/// Fails with what to install when python3 or the pinned redis-py is missing.
pub(super) fn require_python() {
    let req = clients_dir().join("python/requirements.txt");
    let want = pinned_pip(&req, "redis");
    let fix = format!(
        "install it: `python3 -m pip install -r {}` (scripts/test.sh does)",
        req.display()
    );
    match output_of("python3", &["-c", "import redis; print(redis.__version__)"]) {
        Ok(v) if v == want => {}
        Ok(v) => panic!("redis-py {v} is installed, the tests pin {want}: {fix}"),
        Err(e) => panic!("redis-py {want} is needed: {e}; {fix}"),
    }
}

/// Fails with what to install when node or the pinned npm packages are missing.
pub(super) fn require_node() {
    let dir = clients_dir().join("node");
    let fix = format!("run `npm ci` in {} (scripts/test.sh does)", dir.display());
    if let Err(e) = output_of("node", &["--version"]) {
        panic!("Node.js is needed (Debian: nodejs, npm): {e}; then {fix}");
    }
    let manifest = std::fs::read_to_string(dir.join("package.json")).expect("package.json");
    for package in ["redis", "ioredis"] {
        let pinned = manifest
            .find(&format!("\"{package}\": \""))
            .and_then(|at| {
                let rest = manifest.get(at + package.len() + 5..)?;
                rest.get(..rest.find('"')?).map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("package.json pins no {package}"));
        let installed = json_version(&dir.join("node_modules").join(package).join("package.json"));
        assert_eq!(
            installed.as_deref(),
            Some(pinned.as_str()),
            "npm package {package} {pinned} is not installed: {fix}"
        );
    }
}

/// Debian's GOPATH, where `golang-gopkg-redis.v5-dev` installs go-redis v5.
const GOPATH: &str = "/usr/share/gocode";

/// Builds the go-redis smoke program; fails with what to install when go or go-redis v5
/// is missing.
pub(super) fn build_go() -> PathBuf {
    let fix = "install Debian's golang-go and golang-gopkg-redis.v5-dev (scripts/test.sh does)";
    if let Err(e) = output_of("go", &["version"]) {
        panic!("go is needed: {e}; {fix}");
    }
    assert!(
        Path::new(GOPATH)
            .join("src/gopkg.in/redis.v5/redis.go")
            .exists(),
        "go-redis v5 is not in {GOPATH}: {fix}"
    );
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("clients-go-smoke");
    let mut cmd = Command::new("go");
    // Go's build cache in the target directory: no need for a home directory.
    cmd.env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", tmp.join("go-build"))
        .current_dir(clients_dir().join("go"))
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg("smoke.go");
    // The first build compiles go-redis (seconds); later ones come from go's cache.
    let done = run_program(
        "go build of the go-redis smoke program",
        cmd,
        Duration::from_secs(600),
    );
    assert!(
        done.status.success(),
        "go build failed ({}): {}{}",
        done.status,
        done.stdout,
        done.stderr
    );
    out
}

pub(super) fn python_variant(label: &'static str, mode: &str, protocol: u8) -> Variant {
    Variant {
        label,
        cache: if protocol == 3 {
            CACHE_CHECKED
        } else {
            CACHE_RESP3_ONLY
        },
        program: Program::External {
            program: "python3".into(),
            before: vec![clients_dir().join("python/smoke.py")],
            after: vec![mode.to_owned(), protocol.to_string()],
        },
    }
}

pub(super) fn node_variant(
    label: &'static str,
    script: &str,
    args: &[&str],
    cache: &'static str,
) -> Variant {
    Variant {
        label,
        cache,
        program: Program::External {
            program: "node".into(),
            before: vec![clients_dir().join("node").join(script)],
            after: args.iter().map(|a| (*a).to_owned()).collect(),
        },
    }
}
