//! The admin HTTP endpoint: Prometheus metrics, liveness and readiness probes, a JSON
//! status document and a self-contained status page.
//!
//! | route | what | auth |
//! | --- | --- | --- |
//! | `/healthz` | `200 ok` while the process runs | never |
//! | `/readyz` | `200` when the master is up, else `503` and a one-line reason | token |
//! | `/metrics` | OpenMetrics text, rendered by `prometheus-client` ([`exposition`]) | token |
//! | `/status` | the topology, pools, rules and read shares as JSON ([`status`]) | token |
//! | `/` | the status page: the `/status` document of the moment embedded, then polled every second | token |
//!
//! When `admin.token` is set, every route but `/healthz` needs `Authorization: Bearer
//! <token>` (compared in constant time). A browser cannot send that header when it
//! navigates, so the page itself also accepts the token as a query parameter
//! (`/?token=<token>`); its script then sends it as a bearer header to `/status`. Only
//! `/` takes the query form. The token is read from the current settings on each
//! request, so a reload that changes it applies at once; it never appears in a response
//! or a log line.
//!
//! Everything here reads the same snapshots the hot path reads (settings, view, metric
//! atomics) and never takes a lock the hot path takes; the monitor's chart is copied
//! under its own short lock.

pub mod exposition;
pub mod status;

use crate::proxy::Proxy;
use anyhow::Context;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

/// The status page (HTML, CSS and plain JavaScript in one file, no external resources).
pub const STATUS_PAGE: &str = include_str!("admin/status.html");

/// Where [`status_page`] puts the embedded `/status` document.
const INITIAL_STATUS_MARKER: &str = "<!--INITIAL_STATUS-->";

/// The status page with `status` (the `/status` document, JSON) embedded, so the page
/// draws it on load, before its first fetch of `/status`.
///
/// `<` is written as `\u003c` (the same JSON string), so no value can close the script
/// element it sits in.
pub fn status_page(status_json: &str) -> String {
    let safe = status_json.replace('<', "\\u003c");
    STATUS_PAGE.replacen(
        INITIAL_STATUS_MARKER,
        &format!("<script type=\"application/json\" id=\"initial-status\">{safe}</script>"),
        1,
    )
}

/// Content type of the metrics exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every handler shares.
#[derive(Debug, Clone)]
struct AdminState {
    proxy: Arc<Proxy>,
    registry: Arc<Registry>,
}

/// Start the admin endpoint if configured; returns its address.
///
/// Binds `admin.listen` (an empty string disables the endpoint and returns `None`; port 0
/// picks a free port, whose real address is returned) and serves until `stop` turns
/// true (or its sender is dropped).
pub async fn start(
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    let listen = proxy.settings.load().config.admin.listen.clone();
    if listen.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("failed to listen at `admin.listen` ({listen})"))?;
    let addr = listener.local_addr()?;
    let app = router(proxy);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    });
    tracing::info!(%addr, "admin endpoint listening");
    Ok(Some(addr))
}

/// The routes, with the token check on every route but `/healthz`.
fn router(proxy: Arc<Proxy>) -> Router {
    let mut registry = Registry::with_prefix("redsplit");
    registry.register_collector(Box::new(exposition::ProxyCollector::new(proxy.clone())));
    let state = AdminState {
        proxy,
        registry: Arc::new(registry),
    };
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/status", get(status_json))
        .route("/readyz", get(readyz))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

/// Whether `given` equals the configured token, in time independent of where they
/// differ.
fn token_matches(given: &str, token: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// Reject requests without the admin token (when one is configured).
async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let settings = st.proxy.settings.load();
    let token = &settings.config.admin.token;
    if token.is_empty() {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let mut ok = bearer.is_some_and(|b| token_matches(b, token.expose()));
    if !ok && req.uri().path() == "/" {
        // The page itself may carry the token in its URL (a browser cannot add headers).
        if let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(req.uri()) {
            ok = q
                .get("token")
                .is_some_and(|t| token_matches(t, token.expose()));
        }
    }
    if ok {
        return next.run(req).await;
    }
    tracing::debug!(
        path = req.uri().path(),
        "admin request without a valid token"
    );
    let body = if req.uri().path() == "/" {
        "unauthorized: open this page as /?token=<admin.token>\n"
    } else {
        "unauthorized: send the header `Authorization: Bearer <admin.token>`\n"
    };
    let mut resp = (StatusCode::UNAUTHORIZED, body).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"redsplit\""),
    );
    resp
}

/// `GET /healthz`: the process is alive.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: ready to serve when the master is up.
async fn readyz(State(st): State<AdminState>) -> Response {
    match not_ready_reason(&st.proxy) {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Why the proxy cannot serve writes now, if it cannot.
fn not_ready_reason(proxy: &Proxy) -> Option<String> {
    let view = proxy.view.load();
    if let Some(c) = &view.cluster {
        if !c.map.covers_all() {
            return Some("the cluster's slot map does not cover every slot".to_string());
        }
        return c
            .shards
            .iter()
            .find(|v| !v.master_up())
            .map(|v| match &v.master {
                None => "a shard has no known master".to_string(),
                Some(m) => format!("master {} of a shard is not up", m.backend.addr),
            });
    }
    if view.master_up() {
        return None;
    }
    Some(match &view.master {
        None => "no master is known".to_string(),
        Some(m) if m.down => format!("master {} is down (its last poll failed)", m.backend.addr),
        Some(m) => format!("master {} has not answered a poll yet", m.backend.addr),
    })
}

/// `GET /metrics`: the OpenMetrics exposition.
async fn metrics(State(st): State<AdminState>) -> Response {
    let mut body = String::with_capacity(16 * 1024);
    match prometheus_client::encoding::text::encode(&mut body, &st.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to encode metrics\n",
        )
            .into_response(),
    }
}

/// `GET /status`: the status document.
async fn status_json(State(st): State<AdminState>) -> Response {
    let mut resp = Json(status::snapshot(&st.proxy)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /`: the status page, with the status of the moment in it.
async fn page(State(st): State<AdminState>) -> Response {
    let html = match serde_json::to_string(&status::snapshot(&st.proxy)) {
        Ok(json) => status_page(&json),
        // The page then fetches `/status` itself.
        Err(_) => STATUS_PAGE.to_string(),
    };
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The URL may hold the token: never send it anywhere as a referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ),
    );
    resp
}

/// Anything else.
async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: try /, /status, /metrics, /healthz or /readyz\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_embeds_the_status_safely() {
        let page = status_page(r#"{"name":"</script><b>x"}"#);
        assert!(
            page.contains(r#"<script type="application/json" id="initial-status">{"name":"\u003c/script>\u003cb>x"}</script>"#),
            "{page}"
        );
        assert!(!page.contains(INITIAL_STATUS_MARKER));
        assert_eq!(
            page.matches("</script>").count(),
            2,
            "the data closes no element"
        );
    }

    #[test]
    fn token_compare() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3creT", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }
}
