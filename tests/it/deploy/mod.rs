//! The operators' files under `deploy/`: the Grafana dashboard queries only metrics the
//! proxy exports, with labels they carry; the Kubernetes manifests pass the Kubernetes
//! schemas offline, agree with each other and with the proxy (ports, probe paths,
//! shutdown grace, Secret keys), and their proxy.yaml passes `redsplit check`.

use std::path::PathBuf;

mod dashboard;
mod kubernetes;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
