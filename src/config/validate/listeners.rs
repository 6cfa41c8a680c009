//! Checks of the top-level listeners: `listen`, `admin.listen` (not the same socket),
//! and the client `tls` files.

use super::values::same_socket;
use super::{Config, Problems};

/// `listen`, `admin.listen` and `tls`.
pub(super) fn check(p: &mut Problems, cfg: &Config) {
    // Listeners.
    if cfg.listen.is_empty() {
        p.add("listen", "`listen` is empty: give the address clients connect to, e.g. 127.0.0.1:7480 or 0.0.0.0:7480");
    } else {
        p.address("listen", &cfg.listen, true);
    }
    if !cfg.admin.listen.is_empty() {
        p.address("admin.listen", &cfg.admin.listen, true);
        if same_socket(&cfg.listen, &cfg.admin.listen) {
            p.add(
                "admin.listen",
                format!(
                    "`admin.listen` is the same address as `listen` ({}): give the admin endpoint its own port (e.g. 127.0.0.1:7481), or set it to \"\" to disable it",
                    cfg.listen
                ),
            );
        }
    }

    // TLS: the files must load.
    if let Some(t) = &cfg.tls {
        if let Err(e) = crate::tls::server_config(t) {
            p.add(
                "tls.cert",
                format!("`tls`: {e}; give PEM files the proxy can read"),
            );
        }
        if !t.client_ca.is_empty() && t.cert.is_empty() {
            p.add(
                "tls.cert",
                "`tls.cert` is empty: give the certificate the proxy presents",
            );
        }
    }
}
