//! The Kubernetes manifests: the schemas, agreement with each other and with the proxy,
//! `redsplit check` on their proxy.yaml, and the probes and SIGTERM on the binary.

use crate::admin::http_get;
use crate::common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::root;

fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

fn yaml_file(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The resource files kustomization.yaml lists.
fn k8s_resources() -> Vec<PathBuf> {
    let k = yaml_file(&k8s_dir().join("kustomization.yaml"));
    k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| k8s_dir().join(r.as_str().expect("a file name")))
        .collect()
}

/// Every resource of the manifests, by kind.
fn k8s_objects() -> BTreeMap<String, serde_yaml::Value> {
    let mut out = BTreeMap::new();
    for f in k8s_resources() {
        let v = yaml_file(&f);
        let kind = v["kind"].as_str().expect("kind").to_string();
        assert!(out.insert(kind.clone(), v).is_none(), "one {kind}");
    }
    out
}

#[test]
fn kubernetes_manifests_pass_the_schemas() {
    let files = k8s_resources();
    // kustomization.yaml lists every manifest of the folder.
    let mut on_disk: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    on_disk.sort();
    let mut listed = files.clone();
    listed.sort();
    assert_eq!(listed, on_disk, "kustomization.yaml lists every manifest");

    // The oldest Kubernetes these manifests are for (the preStop `sleep` action is on by
    // default from 1.30), and the newest the validator knows.
    for version in ["1.32.0", "1.37.0"] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .output()
            .unwrap_or_else(|e| {
                panic!("kubernetes-validate is needed ({e}); scripts/test.sh installs it (python3 -m pip install kubernetes-validate==1.37.0)")
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate {version}:\n{text}"
        );
        // A kind without a schema is only a warning to the tool: here it fails.
        let passed = text
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert_eq!(
            passed,
            files.len(),
            "every resource validated ({version}):\n{text}"
        );
        assert!(
            !text.contains("WARN") && !text.contains("ERROR"),
            "kubernetes-validate {version}:\n{text}"
        );
    }

    // The validator rejects what it should (so a pass above means something).
    let bad = tempfile::tempdir().unwrap();
    let path = bad.path().join("deployment.yaml");
    let d = std::fs::read_to_string(k8s_dir().join("deployment.yaml"))
        .unwrap()
        .replace("periodSeconds: 5", "periodSeconds: five");
    std::fs::write(&path, d).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.32.0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad probe period fails validation");
}

/// The Deployment's environment, Secret references resolved from the Secret.
fn container_env(objects: &BTreeMap<String, serde_yaml::Value>) -> Vec<(String, String)> {
    env_and_sources(objects)
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect()
}

/// The Deployment's environment: name, value, and whether the value is the Secret's.
fn env_and_sources(objects: &BTreeMap<String, serde_yaml::Value>) -> Vec<(String, String, bool)> {
    let secret = &objects["Secret"];
    let c = &objects["Deployment"]["spec"]["template"]["spec"]["containers"][0];
    c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name").to_string();
            match e["value"].as_str() {
                Some(v) => (name, v.to_string(), false),
                None => {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    assert_eq!(
                        r["name"], secret["metadata"]["name"],
                        "{name} refers to the Secret"
                    );
                    let key = r["key"].as_str().expect("key");
                    let value = secret["stringData"][key]
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: the Secret has no key {key}"))
                        .to_string();
                    (name, value, true)
                }
            }
        })
        .collect()
}

/// `redsplit check` on `file` with only `env` (and PATH) in its environment.
fn check(file: &Path, env: &[(String, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_redsplit"))
        .arg("check")
        .arg(file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port")
}

#[test]
fn kubernetes_manifests_agree_with_the_proxy() {
    let objects = k8s_objects();
    let dep = &objects["Deployment"];
    let pod = &dep["spec"]["template"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&dep["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&objects["Service"]["spec"]["selector"], labels);
    assert_eq!(
        &objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        labels
    );
    assert!(
        dep["spec"]["replicas"].as_u64().is_some_and(|n| n >= 2),
        "more pods than the PodDisruptionBudget lets go"
    );

    // The config: the ConfigMap, mounted as the directory the proxy watches.
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let config_path = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1))
        .expect("--config");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| Path::new(config_path).parent() == m["mountPath"].as_str().map(Path::new))
        .expect("the config's directory is mounted");
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates"
    );
    let volume = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let cm = &objects["ConfigMap"];
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    let file_name = Path::new(config_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let proxy_yaml = cm["data"][file_name]
        .as_str()
        .expect("the ConfigMap holds the config");

    // Ports: the env the ConfigMap's `${VAR}`s read, the container's named ports, the
    // probes, the scrape annotations and the Service.
    let env = container_env(&objects);
    let var = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert!(
        proxy_yaml.contains("${REDSPLIT_LISTEN") && proxy_yaml.contains("${REDSPLIT_ADMIN_LISTEN")
    );
    let client_port = port_of(&var("REDSPLIT_LISTEN").expect("REDSPLIT_LISTEN"));
    let admin_port = port_of(&var("REDSPLIT_ADMIN_LISTEN").expect("REDSPLIT_ADMIN_LISTEN"));
    let named = |n: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("a container port named {n}"))
    };
    assert_eq!(named("client"), u64::from(client_port));
    assert_eq!(named("admin"), u64::from(admin_port));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(
        ann["prometheus.io/port"].as_str(),
        Some(admin_port.to_string().as_str())
    );
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let svc_port = &objects["Service"]["spec"]["ports"][0];
    assert_eq!(svc_port["targetPort"], "client");

    // SIGTERM: the preStop pause and the proxy's drain fit before the kubelet's SIGKILL.
    let cfg: serde_yaml::Value = serde_yaml::from_str(proxy_yaml).unwrap();
    let grace_ms = cfg["shutdown_grace_ms"]
        .as_u64()
        .expect("shutdown_grace_ms set explicitly");
    let pre_stop_ms = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0)
        * 1000;
    let termination_ms = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds")
        * 1000;
    assert!(
        pre_stop_ms + grace_ms + 2000 <= termination_ms,
        "preStop {pre_stop_ms} ms + shutdown_grace_ms {grace_ms} ms + 2 s must fit in terminationGracePeriodSeconds ({termination_ms} ms)"
    );

    // The image's user, and requests and limits set.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let uid = spec["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    assert!(
        dockerfile.contains(&format!("USER {uid}")),
        "runAsUser is the image's USER"
    );
    for what in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            if what == "limits" && r == "cpu" {
                continue; // no CPU limit: throttling a proxy adds latency to every request
            }
            assert!(
                c["resources"][what][r].as_str().is_some(),
                "resources.{what}.{r}"
            );
        }
    }

    // Secrets reach the config only through `${VAR}`: none is written in the ConfigMap.
    let secret = &objects["Secret"];
    for (_, v) in secret["stringData"].as_mapping().expect("stringData") {
        assert!(
            !proxy_yaml.contains(v.as_str().unwrap()),
            "a secret in the ConfigMap"
        );
    }
}

/// The ConfigMap's proxy.yaml written to a file of its own (kept while the directory is).
fn configmap_file(objects: &BTreeMap<String, serde_yaml::Value>) -> (tempfile::TempDir, PathBuf) {
    let proxy_yaml = objects["ConfigMap"]["data"]["proxy.yaml"]
        .as_str()
        .expect("proxy.yaml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, proxy_yaml).unwrap();
    (dir, file)
}

#[test]
fn kubernetes_config_passes_redsplit_check() {
    let objects = k8s_objects();
    let (_dir, file) = configmap_file(&objects);
    let sources = env_and_sources(&objects);
    let env = container_env(&objects);
    let out = check(&file, &env);
    assert!(
        out.status.success(),
        "redsplit check of the ConfigMap's proxy.yaml with the Deployment's env:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each variable the Secret provides is one the config needs: without it, check fails.
    let from_secret: Vec<&String> = sources.iter().filter(|e| e.2).map(|e| &e.0).collect();
    assert!(!from_secret.is_empty(), "the Secret provides variables");
    for name in from_secret {
        let without: Vec<(String, String)> =
            env.iter().filter(|(k, _)| k != name).cloned().collect();
        let out = check(&file, &without);
        assert!(!out.status.success(), "the config needs {name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(name.as_str()));
    }
}

/// The binary, started with the ConfigMap's proxy.yaml and the Deployment's environment
/// (listen addresses on free local ports): the probe paths answer as the kubelet expects
/// (alive; not ready without a master, since its Sentinels are not there), and SIGTERM
/// ends it well within terminationGracePeriodSeconds.
#[test]
fn kubernetes_pod_probes_and_sigterm() {
    let objects = k8s_objects();
    let (_dir, file) = configmap_file(&objects);
    let client: SocketAddr = local_addr(free_port());
    let admin: SocketAddr = local_addr(free_port());
    let mut env = container_env(&objects);
    for (k, v) in env.iter_mut() {
        match k.as_str() {
            "REDSPLIT_LISTEN" => *v = client.to_string(),
            "REDSPLIT_ADMIN_LISTEN" => *v = admin.to_string(),
            _ => {}
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_redsplit"))
        .args(["run", "--config"])
        .arg(&file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(admin, START_TIMEOUT);
    let health = http_get(admin, "/healthz", None);
    assert_eq!(health.status, 200, "{}", health.body);
    let ready = http_get(admin, "/readyz", None);
    assert_eq!(
        ready.status, 503,
        "not ready without a master: {}",
        ready.body
    );
    assert!(ready.body.contains("not ready"), "{}", ready.body);

    let spec = &objects["Deployment"]["spec"]["template"]["spec"];
    let termination = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap());
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > termination {
            let _ = child.kill();
            panic!("still running {termination:?} after SIGTERM");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr);
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{stderr}");
    assert!(stderr.contains("SIGTERM"), "the drain is logged:\n{stderr}");
    for (_, v) in env.iter().filter(|(k, _)| k.contains("PASSWORD")) {
        assert!(!stderr.contains(v.as_str()), "a secret in the logs");
    }
}
