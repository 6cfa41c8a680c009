//! The admin HTTP endpoint.
use crate::proxy::Proxy;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Start the admin endpoint if configured; returns its address.
pub async fn start(
    proxy: Arc<Proxy>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    let _ = (proxy, stop);
    Ok(None)
}
