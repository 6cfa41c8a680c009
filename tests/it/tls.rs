//! TLS on both sides: clients to the proxy (with client-certificate authentication) and
//! the proxy to Redis servers that speak only TLS. Certificates are made by the test.

use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (cert, key)
}

fn leaf(ca: &(rcgen::Certificate, KeyPair), names: &[&str], client: bool) -> (String, String) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    p.extended_key_usages = if client {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    };
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.0, &ca.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let good = ca("redsplit test CA");
    let rogue = ca("someone else's CA");
    write("ca.pem", &good.0.pem());
    write("rogue-ca.pem", &rogue.0.pem());
    let (c, k) = leaf(&good, &["localhost", "127.0.0.1"], false);
    write("server.pem", &c);
    write("server.key", &k);
    let (c, k) = leaf(&good, &["app"], true);
    write("client.pem", &c);
    write("client.key", &k);
    let (c, k) = leaf(&rogue, &["intruder"], true);
    write("rogue-client.pem", &c);
    write("rogue-client.key", &k);
    Pki { dir }
}

/// A `redis-server` that speaks only TLS.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(pki: &Pki, replica_of: Option<u16>) -> TlsRedis {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut args: Vec<String> = [
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-cert-file",
                &pki.path("server.pem"),
                "--tls-key-file",
                &pki.path("server.key"),
                "--tls-ca-cert-file",
                &pki.path("ca.pem"),
                "--tls-auth-clients",
                "optional",
                "--tls-replication",
                "yes",
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                &dir.path().display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(m) = replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), m.to_string()]);
            }
            let child = Command::new("redis-server")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut s = TlsRedis {
                child,
                port,
                _dir: dir,
            };
            let ok = (0..400).any(|_| {
                if s.cli(pki, &["PING"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
                    .unwrap_or(false)
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(25));
                false
            });
            if ok {
                return s;
            }
            let _ = s.child.kill();
        }
        panic!("a TLS redis-server did not start");
    }

    fn cli(&self, pki: &Pki, args: &[&str]) -> std::io::Result<Output> {
        Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                &pki.path("ca.pem"),
                "--cert",
                &pki.path("client.pem"),
                "--key",
                &pki.path("client.key"),
            ])
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
    }

    fn addr(&self) -> SocketAddr {
        local_addr(self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(proxy: SocketAddr, tls: &[String], args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(tls)
        .args(["-p", &proxy.port().to_string()])
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

fn yaml(pki: &Pki, master: &TlsRedis, replica: &TlsRedis, backend_ca: &str) -> String {
    format!(
        "admin: {{listen: ''}}\ntls: {{cert: '{}', key: '{}', client_ca: '{}'}}\nbackend:\n  master: '{}'\n  replicas: ['{}']\n  tls: {{ca: '{}'}}\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
        master.addr(),
        replica.addr(),
        pki.path(backend_ca),
    )
}

#[test]
fn tls_on_both_sides() {
    let pki = pki();
    let master = TlsRedis::start(&pki, None);
    let replica = TlsRedis::start(&pki, Some(master.port));
    let proxy = ProxyUnderTest::start(&yaml(&pki, &master, &replica, "ca.pem"));
    proxy.wait_in_pool(1);
    let client = |cert: &str, key: &str, ca: &str| -> Vec<String> {
        [
            "--tls",
            "--cacert",
            &pki.path(ca),
            "--cert",
            &pki.path(cert),
            "--key",
            &pki.path(key),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let good = client("client.pem", "client.key", "ca.pem");
    assert_eq!(
        out(&cli(proxy.addr, &good, &["SET", "k", "over tls"])),
        "OK"
    );
    let synced = |want: &str| {
        replica
            .cli(&pki, &["GET", "k"])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == want)
            .unwrap_or(false)
    };
    wait_until("the write reaches the TLS replica", SYNC_TIMEOUT, || {
        synced("over tls")
    });
    // A fresh client reads from the replica, through TLS end to end.
    let gets = || {
        let stats =
            String::from_utf8_lossy(&replica.cli(&pki, &["INFO", "commandstats"]).unwrap().stdout)
                .to_string();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = gets();
    assert_eq!(out(&cli(proxy.addr, &good, &["GET", "k"])), "over tls");
    assert_eq!(gets(), before + 1, "the read was served by the replica");
    // A client certificate from another CA is refused.
    let rogue = client("rogue-client.pem", "rogue-client.key", "ca.pem");
    let o = cli(proxy.addr, &rogue, &["PING"]);
    assert!(
        !out(&o).contains("PONG"),
        "a rogue client certificate is refused: {}",
        out(&o)
    );
    // No client certificate at all is refused too (client_ca is set).
    let none: Vec<String> = ["--tls", "--cacert", &pki.path("ca.pem")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(!out(&cli(proxy.addr, &none, &["PING"])).contains("PONG"));
    // A client that trusts another CA does not accept the proxy's certificate.
    let wrong_trust = client("client.pem", "client.key", "rogue-ca.pem");
    assert!(!out(&cli(proxy.addr, &wrong_trust, &["PING"])).contains("PONG"));
    // Plain TCP to a TLS listener gets nowhere.
    assert!(!out(&cli(proxy.addr, &[], &["PING"])).contains("PONG"));
    // The good client still works.
    assert_eq!(out(&cli(proxy.addr, &good, &["PING"])), "PONG");
    tls_client_parks_and_resumes(&pki, &proxy);
}

/// A TLS client that idles is parked like a plain one, and keeps its state: its next
/// request, read from the socket after the wait, is answered as before.
fn tls_client_parks_and_resumes(pki: &Pki, proxy: &ProxyUnderTest) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let mut s = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &proxy.addr.to_string()])
        .args(["-CAfile", &pki.path("ca.pem")])
        .args([
            "-cert",
            &pki.path("client.pem"),
            "-key",
            &pki.path("client.key"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut input = s.stdin.take().unwrap();
    let mut output = BufReader::new(s.stdout.take().unwrap());
    let mut line = || {
        let mut l = String::new();
        output.read_line(&mut l).unwrap();
        l.trim_end().to_owned()
    };
    input
        .write_all(b"CLIENT SETNAME idler\r\nCLIENT ID\r\n")
        .unwrap();
    assert_eq!(line(), "+OK");
    let id: u64 = line().trim_start_matches(':').parse().expect("an id");
    let state = proxy.state().clone();
    wait_until(
        "the idle TLS client is parked",
        Duration::from_secs(10),
        || {
            state.sessions.get(&id).is_some_and(|h| {
                h.inbox.trimmed.load(Ordering::Relaxed) && !h.inbox.trim.load(Ordering::Relaxed)
            })
        },
    );
    input.write_all(b"CLIENT GETNAME\r\n").unwrap();
    assert_eq!(line(), "$5");
    assert_eq!(line(), "idler");
    drop(input);
    let _ = s.kill();
    let _ = s.wait();
}

#[test]
fn a_backend_certificate_from_another_ca_is_refused() {
    let pki = pki();
    let master = TlsRedis::start(&pki, None);
    let replica = TlsRedis::start(&pki, Some(master.port));
    let proxy = ProxyUnderTest::start(&yaml(&pki, &master, &replica, "rogue-ca.pem"));
    let good: Vec<String> = [
        "--tls",
        "--cacert",
        &pki.path("ca.pem"),
        "--cert",
        &pki.path("client.pem"),
        "--key",
        &pki.path("client.key"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = out(&cli(proxy.addr, &good, &["SET", "k", "v"]));
    assert!(
        o.contains("TLS handshake failed") && o.contains(&master.addr().to_string()),
        "{o}"
    );
    let _: &Path = pki.dir.path();
    let _ = PathBuf::new();
}

#[test]
fn unreadable_tls_files_are_a_config_error() {
    let text = "tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\nbackend: {master: '127.0.0.1:6379'}\n";
    let e = redsplit::config::Config::from_yaml(text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tls") && e.contains("/nonexistent/cert.pem"),
        "{e}"
    );
}
