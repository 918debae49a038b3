//! The HTTP admin endpoint of real nodes: every route of a running tiny federation, the bearer
//! token (missing, wrong, right, in the page's URL), the limits (bodies, methods, an oversized
//! head, a slow client, too many connections), `/metrics` as valid OpenMetrics, a node that
//! refuses to serve off loopback without a token, and the live page in headless Chromium
//! (waits for a completed round, checks the ε chart and the peers table, saves a screenshot).
//!
//! Traffic stays on 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use node::admin::http::{HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD};
use serde_json::Value;
use support::{configure, configure_with, fedmmkt, init, round_of, wait_for, Proc, PSK};

/// The admin address a node published.
fn admin_addr(dir: &Path) -> SocketAddr {
    std::fs::read_to_string(dir.join("admin.addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// One whole HTTP exchange: `request` as raw bytes; the answer's status, head and body.
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer (and close) before it read all of an oversized request.
    let _ = s.write_all(request);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&reply)));
    let head = String::from_utf8_lossy(&reply[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head, reply[split + 4..].to_vec())
}

/// `GET path` with an optional bearer token.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// Writes a line the test harness does not capture: a skipped check is never silent.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn admin_endpoint_over_http_and_in_a_browser() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let psk = tmp.path().join("psk.hex");
    std::fs::write(&psk, PSK).unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let ids: Vec<String> = dirs.iter().map(|d| init(d, &psk)).collect();
    let rounds = 2;
    // Node 0 asks for the token on loopback too; the others serve loopback openly.
    configure_with(&dirs[0], &ids, None, rounds, |c| {
        c.admin.require_token = true
    });
    let mut procs = vec![Proc::start(&dirs[0])];
    let boot = procs[0].addr.clone();
    for d in &dirs[1..] {
        configure(d, &ids, Some(&boot), rounds);
        procs.push(Proc::start(d));
    }
    let token = std::fs::read_to_string(dirs[0].join("admin.token")).unwrap();
    let token = token.trim();
    let a0 = admin_addr(&dirs[0]);

    // Off loopback without a token file, a node refuses to start, and says why.
    let lone = tmp.path().join("lone");
    init(&lone, &psk);
    configure_with(&lone, &ids, None, rounds, |c| {
        c.admin.listen = "0.0.0.0:0".into()
    });
    std::fs::remove_file(lone.join("admin.token")).unwrap();
    let out = fedmmkt(&["run", "--gpu", "off", "--data-dir", lone.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.token") && err.contains("not a loopback address"),
        "{err}"
    );

    // The CLI sends the token from the data directory.
    wait_for("round 1", Duration::from_secs(120), || {
        procs.iter().all(|p| round_of(p) >= 1)
    });
    let status = json(&get(a0, "/status", Some(token)).2);
    assert!(status["round"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["peer_id"], ids[0].as_str());

    // Missing or wrong token: 401 on every guarded route; /metrics too (metrics_token).
    for path in [
        "/status",
        "/peers",
        "/audit",
        "/history",
        "/metrics",
        "/",
        "/grid.png",
    ] {
        assert_eq!(get(a0, path, None).0, 401, "{path} without a token");
        let (code, head, _) = get(a0, path, Some("not-the-token"));
        assert_eq!(code, 401, "{path} with a wrong token");
        assert!(head.to_lowercase().contains("www-authenticate: bearer"));
    }
    assert_eq!(get(a0, &format!("/?token={token}"), None).0, 200);
    assert_eq!(get(a0, "/?token=wrong", None).0, 401);

    // Every route, with the token.
    let peers = json(&get(a0, "/peers", Some(token)).2);
    assert_eq!(peers.as_array().unwrap().len(), 2, "{peers}");
    let audit = json(&get(a0, "/audit", Some(token)).2);
    assert_eq!(audit["chain"]["valid"], true);
    let history = json(&get(a0, "/history", Some(token)).2);
    let first = &history[0];
    assert_eq!(first["round"], 1, "{history}");
    assert!(first["test_acc"].as_f64().is_some(), "{history}");
    assert!(first["epsilon_spent"].as_f64().unwrap() > 0.0, "{history}");
    let (code, head, page) = get(a0, "/", Some(token));
    assert_eq!(code, 200);
    assert!(head.to_lowercase().contains("content-type: text/html"));
    assert!(String::from_utf8_lossy(&page).contains("id=\"epsilon-chart\""));
    let (code, head, metrics) = get(a0, "/metrics", Some(token));
    assert_eq!(code, 200);
    assert!(head.contains("openmetrics-text"), "{head}");
    let text = String::from_utf8(metrics).unwrap();
    let (rest, families) = nom_openmetrics::parser::openmetrics(&text)
        .unwrap_or_else(|e| panic!("/metrics is not OpenMetrics: {e}\n{text}"));
    assert!(rest.is_empty());
    let sample = |name: &str| {
        families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| s.name() == name)
            .map(|s| s.number())
    };
    assert!(sample("fedmmkt_round_completed").unwrap() >= 1.0, "{text}");
    assert_eq!(sample("fedmmkt_peers_connected"), Some(2.0), "{text}");
    assert!(sample("fedmmkt_epsilon_spent").unwrap() > 0.0);
    assert!(sample("fedmmkt_bytes_total").unwrap() > 0.0, "{text}");
    for name in [
        "fedmmkt_term",
        "fedmmkt_is_host",
        "fedmmkt_phase",
        "fedmmkt_epsilon_budget",
        "fedmmkt_round_seconds",
        "fedmmkt_client_accuracy",
    ] {
        assert!(sample(name).is_some(), "{name} missing:\n{text}");
    }
    // The host shows its latest synthetic images; a client has none.
    let host = status["host"].as_str().unwrap().to_string();
    let h = ids.iter().position(|id| *id == host).unwrap();
    let c = (h + 1) % 3;
    let auth = |i: usize| (i == 0).then_some(token);
    let (code, head, png) = get(admin_addr(&dirs[h]), "/grid.png", auth(h));
    assert_eq!(code, 200, "{head}");
    assert!(png.starts_with(b"\x89PNG"));
    assert!(head.to_lowercase().contains("x-fedmmkt-round: "), "{head}");
    assert_eq!(get(admin_addr(&dirs[c]), "/grid.png", auth(c)).0, 404);
    // Open nodes need no token, and the CLI reads the token of a guarded one.
    assert_eq!(get(admin_addr(&dirs[1]), "/status", None).0, 200);
    let out = fedmmkt(&["status", "--json", "--data-dir", dirs[0].to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out.stdout)["running"], true);

    // Limits: no bodies, GET and HEAD only, a bounded head, unknown routes.
    let a1 = admin_addr(&dirs[1]);
    let (code, _, _) = exchange(
        a1,
        b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(code, 413);
    let (code, head, _) = exchange(
        a1,
        b"POST /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405);
    assert!(head.to_lowercase().contains("allow: get, head"));
    let huge = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(4 * MAX_HEAD)
    );
    let (code, _, _) = exchange(a1, huge.as_bytes());
    assert_eq!(code, 431, "an oversized head is refused");
    assert_eq!(get(a1, "/nope", None).0, 404);

    // A slow client is cut off once it took HEAD_TIMEOUT for its head, and the others are
    // answered meanwhile.
    let mut slow = TcpStream::connect(a1).unwrap();
    slow.write_all(b"GET /sta").unwrap();
    let cut = Instant::now();
    assert_eq!(
        get(a1, "/status", None).0,
        200,
        "served beside a slow client"
    );
    slow.set_read_timeout(Some(HEAD_TIMEOUT * 4)).unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = cut.elapsed();
    assert!(
        waited >= HEAD_TIMEOUT - Duration::from_millis(500) && waited < HEAD_TIMEOUT * 3,
        "the slow client was cut after {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&buf).contains(" 200 "));
    // Connections beyond MAX_CONNECTIONS are closed at once.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(a1).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(a1).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = extra.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    // Closed at once: an end of stream or a reset, never an answer (nor a read timeout).
    let read = extra.read_to_end(&mut buf);
    assert!(
        buf.is_empty()
            && read
                .as_ref()
                .map_or_else(|e| e.kind() != std::io::ErrorKind::WouldBlock, |_| true),
        "the extra connection was not closed unanswered: {read:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(idle);
    // Slots free up as the server sees those connections close.
    wait_for("a free slot", Duration::from_secs(10), || {
        let mut s = TcpStream::connect(a1).unwrap();
        let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        reply.starts_with(b"HTTP/1.1 200")
    });

    browser_check(&dirs, h, token, &procs);
    eprintln!(
        "admin endpoint test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Debian's Chromium, when installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(move |dir| dir.join(name))
        })
        .find(|p| p.is_file())
}

/// Headless Chromium on `url`: the DOM after the page's script ran (`--dump-dom`), or a
/// screenshot to `screenshot`.
fn headless(chrome: &Path, profile: &Path, url: &str, screenshot: Option<&Path>) -> String {
    let mut cmd = Command::new(chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(path) => cmd
            .arg(format!("--screenshot={}", path.display()))
            .arg("--window-size=1280,900"),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The page of the host (node `h`) in headless Chromium: it must show a completed round,
/// the ε chart's line and the peers table; its screenshot is kept under the test's output
/// directory.
fn browser_check(dirs: &[PathBuf], h: usize, token: &str, procs: &[Proc]) {
    let Some(chrome) = chromium() else {
        say("SKIPPED the browser check of the live page: no chromium on PATH (Debian: `apt-get install chromium`; .ci/run installs it)");
        if std::env::var_os("CI").is_some() && std::env::var_os("FEDMMKT_NO_CHROMIUM").is_none() {
            panic!("CI installs chromium; set FEDMMKT_NO_CHROMIUM=<why> where it cannot");
        }
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let addr = admin_addr(&dirs[h]);
    let url = match h {
        0 => format!("http://{addr}/?token={token}"),
        _ => format!("http://{addr}/"),
    };
    let mut dom = String::new();
    let shown = |dom: &str| {
        dom.split("data-round=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(90) {
        dom = headless(&chrome, profile.path(), &url, None);
        if shown(&dom) >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        shown(&dom) >= 1,
        "the page never showed a completed round:\n{dom}"
    );
    let part = |id: &str, end: &str| {
        dom.split(&format!("id=\"{id}\""))
            .nth(1)
            .and_then(|rest| rest.split(end).next())
            .unwrap_or_default()
            .to_string()
    };
    let chart = part("epsilon-chart", "</svg>");
    assert!(chart.contains("<polyline"), "no ε line: {chart}");
    let peers = part("peers", "</table>");
    assert_eq!(peers.matches("class=\"peer").count(), 2, "{peers}");
    assert!(part("host", "</div>").contains("this node"));
    // The screenshot, for the README and for a person checking a failed run.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin_http");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("node_page.png");
    headless(&chrome, profile.path(), &url, Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    say(&format!("live page screenshot: {}", shot.display()));
    assert!(procs.iter().all(|p| p.status().is_some()), "nodes still up");
}
