//! The admin endpoint against a real replica set: metrics agree with the traffic sent,
//! readiness follows the master, `/status` describes every backend, the token guards
//! every route but `/healthz` and never leaks, and the status page renders in a real
//! (headless) browser.

use crate::common::*;
use prometheus_parse::Scrape;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

mod endpoints;
mod metrics;
pub(crate) mod status_page;

// ---------------------------------------------------------------------------------------
// A tiny blocking HTTP/1.1 client
// ---------------------------------------------------------------------------------------

/// One HTTP response.
pub(crate) struct Response {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with an optional bearer token; `Connection: close`, read to the end.
pub(crate) fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, CMD_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to admin {addr}: {e}"));
    s.set_read_timeout(Some(CMD_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(CMD_TIMEOUT))
        .expect("write timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size_text = String::from_utf8_lossy(&rest[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

// ---------------------------------------------------------------------------------------
// Scrapes and the admin token
// ---------------------------------------------------------------------------------------

/// Scrape `/metrics`, check the exposition's framing, and parse it.
fn scrape(admin: SocketAddr, token: Option<&str>) -> (Scrape, String) {
    let r = http_get(admin, "/metrics", token);
    assert_eq!(r.status, 200, "/metrics: {}", r.body);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/openmetrics-text"),
        "content type {ct}"
    );
    assert!(
        r.body.ends_with("# EOF\n"),
        "the exposition ends with # EOF"
    );
    let scrape =
        Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).expect("parse the exposition");
    (scrape, r.body)
}

const TOKEN: &str = "adm-7Qx2-secret-token";
