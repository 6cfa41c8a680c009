//! Live configuration reloads.
use crate::proxy::Proxy;
use std::sync::Arc;
use tokio::sync::watch;

/// Watch for SIGHUP and file changes.
pub async fn watch(proxy: Arc<Proxy>, stop: watch::Receiver<bool>) {
    let _ = (proxy, stop);
}
