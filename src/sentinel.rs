//! Sentinel discovery.
use crate::proxy::Proxy;
use std::sync::Arc;
use tokio::sync::watch;

/// Follow the topology Sentinel reports.
pub async fn run(proxy: Arc<Proxy>, stop: watch::Receiver<bool>) {
    let _ = (proxy, stop);
}
