//! The status page in a real (headless) browser.

use crate::common::*;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::TOKEN;

/// Chromium's binary, found on PATH (`chromium`, or `chromium-browser` as some
/// distributions name it).
fn chromium_binary() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
        .expect("no chromium on PATH: the status page test needs a headless browser; run `apt-get install chromium` (scripts/test.sh installs it)")
}

/// Run headless Chromium with `args` (after the common flags); returns its stdout.
pub(crate) fn chromium(profile: &Path, args: &[&str]) -> String {
    let mut child = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s ({args:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("stdout reader")
}

/// The text of every `<td class="num staleness …">…</td>` cell.
fn staleness_cells(dom: &str) -> Vec<String> {
    dom.match_indices("class=\"num staleness")
        .filter_map(|(i, _)| {
            let rest = &dom[i..];
            let start = rest.find('>')? + 1;
            let end = rest[start..].find('<')? + start;
            Some(rest[start..end].to_string())
        })
        .collect()
}

/// The opening tags of the elements whose `class` attribute starts with `class`.
fn tags_with_class<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let needle = format!("class=\"{class}");
    dom.match_indices(&needle)
        .filter_map(|(i, _)| {
            let start = dom[..i].rfind('<')?;
            let end = i + dom[i..].find('>')?;
            Some(&dom[start..=end])
        })
        .collect()
}

/// The value of attribute `name` in an opening tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(&tag[start..end])
}

/// The text inside the element that `tag` (an opening tag found in `dom`) opens, the
/// text of nested elements included.
fn text_after(dom: &str, tag: &str) -> String {
    let start = dom.find(tag).map(|i| i + tag.len()).unwrap_or(dom.len());
    let (mut depth, mut out, mut rest) = (1, String::new(), &dom[start..]);
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let end = rest[lt..].find('>').map_or(rest.len(), |e| lt + e + 1);
        let t = &rest[lt..end];
        if t.starts_with("</") {
            depth -= 1;
            if depth == 0 {
                break;
            }
        } else if !t.ends_with("/>") {
            depth += 1;
        }
        rest = &rest[end..];
    }
    out
}

/// What every load of the status page must show: every backend with a staleness cell,
/// data from a poll of `/status`, a distinct colour per chart line, and a y-axis scaled
/// to the data with each budget drawn or listed as above the chart.
///
/// Returns how many replicas showed a numeric staleness.
fn check_status_page(dom: &str, replicas: &[SocketAddr], budgets: usize, load: usize) -> usize {
    for addr in replicas {
        assert!(
            dom.contains(&addr.to_string()),
            "load {load}: the page shows replica {addr}:\n{dom}"
        );
    }
    assert!(
        !dom.contains("connecting…"),
        "load {load}: the page shows data:\n{dom}"
    );
    let body = dom
        .find("<body")
        .map(|i| &dom[i..i + dom[i..].find('>').unwrap() + 1])
        .expect("a body tag");
    let polls: u64 = attr(body, "data-polls")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("load {load}: no poll of /status succeeded: {body}"));
    assert!(polls >= 1, "load {load}: {body}");
    let cells = staleness_cells(dom);
    assert_eq!(
        cells.len(),
        replicas.len() + 1,
        "load {load}: a staleness cell per backend: {cells:?}"
    );
    // A replica's staleness is unknown ("—") while its or the master's polls lag (a
    // loaded machine); anything else is a number.
    let numeric = cells
        .iter()
        .filter(|c| c.replace(',', "").parse::<u64>().is_ok())
        .count();
    assert!(
        cells
            .iter()
            .all(|c| c == "—" || c.replace(',', "").parse::<u64>().is_ok()),
        "load {load}: staleness cells are numbers or \"—\": {cells:?}"
    );
    assert!(
        dom.contains("id=\"error\" class=\"error\" hidden"),
        "load {load}: no error banner:\n{dom}"
    );

    // One colour per line: each replica and each budget.
    let series = tags_with_class(dom, "item series");
    let budget_items = tags_with_class(dom, "item budget");
    assert_eq!(
        series.len(),
        replicas.len(),
        "load {load}: a legend item per replica"
    );
    assert_eq!(
        budget_items.len(),
        budgets,
        "load {load}: a legend item per budget"
    );
    let colors: Vec<&str> = series
        .iter()
        .chain(budget_items.iter())
        .map(|t| attr(t, "data-color").expect("data-color"))
        .collect();
    let distinct: std::collections::BTreeSet<&str> = colors.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        colors.len(),
        "load {load}: every line has its own colour: {colors:?}"
    );

    // The y-axis follows the data: above its largest value, and not far above it.
    let canvas = dom
        .find("<canvas id=\"chart\"")
        .map(|i| &dom[i..i + dom[i..].find('>').unwrap() + 1])
        .expect("the chart");
    let ymax: f64 = attr(canvas, "data-ymax")
        .and_then(|v| v.parse().ok())
        .expect("data-ymax");
    let data_max: f64 = attr(canvas, "data-data-max")
        .and_then(|v| v.parse().ok())
        .expect("data-data-max");
    assert!(
        ymax >= data_max && ymax <= 2.0 * data_max.max(10.0),
        "load {load}: y-axis up to {ymax} ms for data up to {data_max} ms"
    );
    for b in &budget_items {
        let ms: f64 = attr(b, "data-ms")
            .and_then(|v| v.parse().ok())
            .expect("data-ms");
        let above = text_after(dom, b).contains("above the chart");
        assert_eq!(
            above,
            ms > ymax,
            "load {load}: budget {ms} ms with the axis at {ymax} ms: {}",
            text_after(dom, b)
        );
    }
    numeric
}

#[test]
fn status_page_renders_in_a_browser() {
    let mut set = ReplicaSet::start(2, false);
    let rules = "routing:\n  rules:\n    - name: feeds\n      keys: [\"feed:*\"]\n      max_lag_ms: 5000\n    - name: leaderboard\n      keys: [\"lb:*\"]\n      max_lag_ms: 200\n    - name: stock\n      keys: [\"stock:*\"]\n      consistency: master\n      wait: {replicas: 1, timeout_ms: 500}\n";
    let yaml = format!(
        "{}admin:\n  listen: \"127.0.0.1:0\"\n  token: \"{TOKEN}\"\n",
        proxy_yaml(&set, rules)
    );
    let proxy = ProxyUnderTest::start(&yaml);
    let admin = proxy.admin_addr.expect("admin endpoint enabled");
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    for i in 0..20 {
        query(&mut c, &["SET", &format!("feed:{i}"), "1"]).expect("SET");
    }
    let mut r = proxy.conn();
    for i in 0..50 {
        query(&mut r, &["GET", &format!("feed:{i}")]).expect("GET");
        query(&mut r, &["GET", &format!("stock:{i}")]).expect("GET");
    }
    // A few seconds of chart.
    wait_until("the chart has 3 points per replica", SYNC_TIMEOUT, || {
        proxy
            .state()
            .monitor
            .chart()
            .iter()
            .all(|(_, p)| p.len() >= 3)
    });

    // Five loads (the default budget, feeds and leaderboard: three budget lines), each
    // with content, as a fresh browser would get it.
    let url = format!("http://{admin}/?token={TOKEN}");
    let replicas = set.replica_addrs();
    let mut all_numeric = 0;
    for load in 1..=5 {
        let profile = tempfile::tempdir().expect("profile dir");
        let dom = chromium(
            profile.path(),
            &["--virtual-time-budget=4000", "--dump-dom", &url],
        );
        if check_status_page(&dom, &replicas, 3, load) == replicas.len() {
            all_numeric += 1;
        }
    }
    assert!(
        all_numeric > 0,
        "no load showed a numeric staleness for every replica"
    );

    let profile = tempfile::tempdir().expect("profile dir");
    // Without the token the page says what is wrong instead of staying blank.
    let dom = chromium(
        profile.path(),
        &[
            "--virtual-time-budget=3000",
            "--dump-dom",
            &format!("http://{admin}/"),
        ],
    );
    assert!(
        dom.contains("unauthorized"),
        "the server refuses the page without a token:\n{dom}"
    );

    // A screenshot, for people and for a sanity check of the canvas.
    let shot: PathBuf = std::env::var_os("REDSPLIT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile.path().join("status.png"));
    let _ = std::fs::remove_file(&shot);
    let shot_arg = format!("--screenshot={}", shot.display());
    chromium(
        profile.path(),
        &[
            "--virtual-time-budget=4000",
            "--window-size=1200,900",
            &shot_arg,
            &url,
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "the screenshot has content ({} bytes)",
        png.len()
    );

    // A replica that stops answering: the legend names its state with the table's word.
    let gone = replicas[1];
    set.replicas[1].kill();
    let state = proxy.state().clone();
    wait_until("the proxy sees the replica gone", SYNC_TIMEOUT, || {
        state.view.load().replicas.iter().any(|r| {
            r.backend.addr == gone.to_string() && r.health != redsplit::topology::Health::Ok
        })
    });
    let dom = chromium(
        profile.path(),
        &["--virtual-time-budget=3000", "--dump-dom", &url],
    );
    let row_start = dom
        .find(&format!("data-addr=\"{gone}\""))
        .expect("the replica's row");
    let health_tag = tags_with_class(&dom[row_start..], "pill health")
        .into_iter()
        .next()
        .expect("a health pill");
    let word = text_after(&dom[row_start..], health_tag);
    assert!(
        !word.is_empty() && word != "ok",
        "the table shows the replica's state: {word:?}"
    );
    let item = tags_with_class(&dom, "item series")
        .into_iter()
        .find(|t| attr(t, "data-addr") == Some(gone.to_string().as_str()))
        .expect("the replica's legend item");
    let legend = text_after(&dom, item);
    assert!(
        legend.contains(&word),
        "the legend says {legend:?} where the table says {word:?}"
    );
    if word != "unknown" {
        assert!(!legend.contains("unknown"), "{legend:?}");
    }
}

#[test]
fn status_page_says_when_status_fails() {
    // The page as a browser gets it, opened where `status` cannot be fetched: the script
    // must say so instead of showing an empty page.
    let profile = tempfile::tempdir().expect("profile dir");
    let page = profile.path().join("index.html");
    std::fs::write(&page, redsplit::admin::STATUS_PAGE).expect("write the page");
    let dom = chromium(
        profile.path(),
        &[
            "--virtual-time-budget=3000",
            "--dump-dom",
            &format!("file://{}", page.display()),
        ],
    );
    assert!(
        dom.contains("id=\"error\" class=\"error\">Status unavailable:"),
        "a visible error banner:\n{dom}"
    );
    assert!(
        dom.contains("status unavailable"),
        "the header badge says so too:\n{dom}"
    );
    // No external resources: everything the page needs is in it.
    let html = redsplit::admin::STATUS_PAGE;
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("src="),
        "self-contained"
    );
}
