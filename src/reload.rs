//! Live configuration reloads: on SIGHUP, and when `proxy.yaml` changes on disk.
//!
//! The watcher watches the file's directory, not the file, so both an editor's
//! write-to-temp-then-rename and a Kubernetes ConfigMap's symlink swap are seen; events
//! are debounced and the file is re-read only when its text changed. A new file is
//! validated first; if it is invalid the running configuration stays, the reason is
//! logged and counted. A valid one is swapped in with one atomic store: requests already
//! routed finish under the old policy, new ones use the new. Settings that cannot change
//! while running (`listen`, `workers`, `admin.listen`, `shutdown_grace_ms`) keep their
//! running value and are reported as needing a restart, as is a switch between static
//! backends and Sentinel. Backends are rebuilt by [`Backends::from_static`] (Sentinel
//! mode: by the follower's next refresh, with the same builder): one whose address,
//! role, credentials and TLS are unchanged keeps its connections and takes the new pool
//! settings.

use crate::config::{Config, ConfigError};
use crate::proxy::{Proxy, Settings};
use crate::topology::Backends;
use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new configuration runs now, as this generation.
    Applied {
        /// The new policy generation.
        generation: u64,
        /// Settings that changed but need a restart (their running values were kept).
        restart_required: Vec<&'static str>,
    },
    /// The file's text is what already runs.
    Unchanged,
    /// It validated but could not be put into effect (TLS files unreadable).
    Rejected(String),
}

/// Re-read the configuration file and apply it. `force` applies it even if unchanged
/// (SIGHUP).
pub fn reload(proxy: &Arc<Proxy>, why: &str, force: bool) -> Result<Outcome, ConfigError> {
    let Some(path) = proxy.config_path.clone() else {
        return Ok(Outcome::Unchanged);
    };
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            proxy
                .metrics
                .reloads_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(trigger = why, error = %e, "configuration rejected; the running configuration stays");
            return Err(e);
        }
    };
    Ok(apply(proxy, new, why, force))
}

/// Apply a validated configuration.
pub fn apply(proxy: &Arc<Proxy>, mut new: Config, why: &str, force: bool) -> Outcome {
    let old = proxy.settings.load_full();
    if *old.config == new && !force {
        return Outcome::Unchanged;
    }
    let restart_required = old.config.restart_required(&new);
    for setting in &restart_required {
        tracing::warn!(
            setting,
            "changed in the configuration file but needs a restart; the running value stays"
        );
    }
    // Keep the running values of what cannot change live.
    new.listen = old.config.listen.clone();
    new.workers = old.config.workers;
    new.admin.listen = old.config.admin.listen.clone();
    new.shutdown_grace_ms = old.config.shutdown_grace_ms;
    let mode = |b: &crate::config::BackendConfig| (b.uses_sentinel(), b.uses_cluster());
    if mode(&new.backend) != mode(&old.config.backend) {
        tracing::warn!("switching between static backends, Sentinel and a cluster needs a restart; the running backends stay");
        new.backend.master = old.config.backend.master.clone();
        new.backend.replicas = old.config.backend.replicas.clone();
        new.backend.sentinel = old.config.backend.sentinel.clone();
        new.backend.cluster = old.config.backend.cluster.clone();
    }
    let generation = proxy.next_generation();
    let settings = match Settings::new(new, generation) {
        Ok(s) => s,
        Err(e) => {
            proxy
                .metrics
                .reloads_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(trigger = why, error = %e, "configuration rejected; the running configuration stays");
            return Outcome::Rejected(e.to_string());
        }
    };
    settings.policy.carry_hits(&old.policy);
    let is_static = settings.config.backend.is_static();
    let fingerprint = settings.fingerprint.clone();
    let (key_fence, capacity) = (
        settings.policy.key_fence,
        settings.policy.key_fence_capacity,
    );
    proxy.settings.store(Arc::new(settings));
    proxy
        .key_fence
        .configure(key_fence, capacity, std::time::Instant::now());
    if is_static {
        let current = proxy.monitor.backends();
        let next = Backends::from_static(&proxy.settings.load().config, &current);
        let ids = |b: &Backends| b.all().map(|b| b.id).collect::<Vec<_>>();
        if ids(&current) != ids(&next) {
            tracing::info!(
                master = ?next.master.as_ref().map(|b| b.addr.clone()),
                replicas = ?next.replicas.iter().map(|b| b.addr.clone()).collect::<Vec<_>>(),
                "backends changed"
            );
            proxy.monitor.set_backends(proxy, next);
        }
    }
    // Recompute pools for the new budgets at once.
    proxy.monitor.publish(proxy);
    if proxy.settings.load().config.backend.uses_cluster() {
        proxy
            .cluster
            .rebuild(proxy, &proxy.settings.load().config.clone());
    }
    proxy.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
    tracing::info!(trigger = why, generation, fingerprint = %fingerprint, "configuration reloaded");
    Outcome::Applied {
        generation,
        restart_required,
    }
}

/// Reload on SIGHUP (`hup`, registered by the caller before clients are accepted) and on
/// file changes until `stop`.
pub async fn watch(
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
    mut hup: Option<tokio::signal::unix::Signal>,
) {
    let Some(path) = proxy.config_path.clone() else {
        let _ = stop.changed().await;
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(64);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|_| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the configuration directory; reload with SIGHUP");
            None
        }
    };
    let mut last_text = std::fs::read(&path).ok();
    loop {
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hup_recv => {
                last_text = std::fs::read(&path).ok();
                let _ = reload(&proxy, "SIGHUP", true);
            }
            Some(()) = rx.recv() => {
                // Debounce: editors and ConfigMap updates come as bursts of events.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                let text = std::fs::read(&path).ok();
                if text.is_some() && text != last_text {
                    last_text = text;
                    let _ = reload(&proxy, "file changed", false);
                }
            }
            _ = stop.changed() => return,
        }
    }
}
