//! `up --dashboard`: one live page for the whole testnet while it runs (every node's phase,
//! the host, rounds, ε per node, and the accuracy and generator curves so far), served on
//! loopback by the node's own admin HTTP server with its limits.

use std::net::SocketAddr;
use std::sync::Arc;

use node::admin::http::{json, not_found, page, serve_routes, PageCell};
use serde::Serialize;
use tokio::sync::watch;

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// One node as the page shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeView {
    /// Index in the testnet (`n3`).
    pub index: usize,
    /// Its libp2p id.
    pub peer_id: String,
    /// Its phase letter: H host, l learn, j judge, a aggregate, c complete, ! abandoned,
    /// . other, x down.
    pub letter: char,
    /// Last round it knows completed.
    pub round: u64,
    /// ε spent.
    pub epsilon_spent: f64,
    /// Its ε budget.
    pub epsilon_budget: f64,
}

/// One completed round as the page charts it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoundView {
    /// Round number.
    pub round: u64,
    /// Contributors in its sum.
    pub participants: usize,
    /// Mean and worst client test accuracy after it.
    pub client_acc_mean: Option<f64>,
    /// Worst client test accuracy after it.
    pub client_acc_min: Option<f64>,
    /// Synthetic samples the host kept (the generator's curve while the testnet runs: its
    /// oracle scores come after the nodes stop).
    pub kept: usize,
    /// Their mean reward.
    pub mean_reward: f64,
    /// Seconds it took at the host.
    pub seconds: f64,
}

/// What the page shows, replaced as the testnet runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct View {
    /// Rounds asked for.
    pub rounds_requested: u64,
    /// The testnet's progress line.
    pub progress: String,
    /// Seconds since the testnet started.
    pub elapsed_seconds: f64,
    /// Index of the host, when one is known.
    pub host: Option<usize>,
    /// Every node.
    pub nodes: Vec<NodeView>,
    /// Every completed round.
    pub rounds: Vec<RoundView>,
    /// Set once the nodes have stopped.
    pub finished: bool,
}

/// The running dashboard: update it with [`Dashboard::show`]; dropping it stops the server.
pub struct Dashboard {
    /// The page's URL.
    pub url: String,
    tx: watch::Sender<Arc<View>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dashboard {
    /// Serves the page on `addr` (loopback only: the page has no token) from a thread of its
    /// own.
    pub fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "--dashboard {addr}: the dashboard serves loopback only (it has no access token)"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let url = format!("http://{}/", listener.local_addr()?);
        let (tx, rx) = watch::channel(Arc::new(View::default()));
        let mut closed = rx.clone();
        let thread = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                runtime.block_on(serve_routes(
                    listener,
                    move |parts| match parts.uri.path() {
                        "/" => {
                            static BUILT: PageCell = PageCell::new();
                            page(&BUILT, PAGE)
                        }
                        "/state" => json(&**rx.borrow()),
                        other => not_found(&format!("no route {other:?}: try / or /state")),
                    },
                    async move { while closed.changed().await.is_ok() {} },
                ))
            })?;
        Ok(Self {
            url,
            tx,
            thread: Some(thread),
        })
    }

    /// Replaces what the page shows.
    pub fn show(&self, view: View) {
        self.tx.send_replace(Arc::new(view));
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        // A fresh sender is dropped in place of ours: the server sees the channel close.
        let (tx, _) = watch::channel(Arc::new(View::default()));
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(url: &str, path: &str) -> String {
        let addr = url.trim_start_matches("http://").trim_end_matches('/');
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn the_page_and_its_state_are_served_until_the_dashboard_drops() {
        assert!(Dashboard::start("0.0.0.0:0".parse().unwrap()).is_err());
        let d = Dashboard::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let page = get(&d.url, "/");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("id=\"accuracy-chart\""));
        d.show(View {
            rounds_requested: 3,
            host: Some(1),
            nodes: vec![NodeView {
                index: 1,
                letter: 'H',
                epsilon_spent: 1.5,
                ..NodeView::default()
            }],
            rounds: vec![RoundView {
                round: 1,
                client_acc_mean: Some(0.5),
                ..RoundView::default()
            }],
            ..View::default()
        });
        let state = get(&d.url, "/state");
        let body = state.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["host"], 1);
        assert_eq!(v["nodes"][0]["letter"], "H");
        assert_eq!(v["rounds"][0]["client_acc_mean"], 0.5);
        assert!(get(&d.url, "/nope").starts_with("HTTP/1.1 404"));
        let url = d.url.clone();
        drop(d);
        let addr = url.trim_start_matches("http://").trim_end_matches('/');
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "stopped with the dashboard"
        );
    }
}
