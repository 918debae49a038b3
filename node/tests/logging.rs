//! Logs off a terminal are plain text: `fedmmkt run > node.log 2>&1` carries no ANSI colour.

use std::process::{Command, Stdio};

#[test]
fn logs_to_a_pipe_carry_no_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let dir = dir.to_str().expect("temp paths are UTF-8");
    let init = Command::new(env!("CARGO_BIN_EXE_fedmmkt"))
        .args(["init", "--data-dir", dir])
        .output()
        .expect("the fedmmkt binary runs");
    assert!(init.status.success(), "{init:?}");
    // A QUIC listener without a member list is refused with a warning; the missing dataset
    // then ends the run before it touches the network.
    let missing = tmp.path().join("no-such-dataset");
    let out = Command::new(env!("CARGO_BIN_EXE_fedmmkt"))
        .args(["run", "--data-dir", dir, "--gpu", "off"])
        .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
        .arg("--dataset")
        .arg(&missing)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("the fedmmkt binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the run must fail on the missing dataset"
    );
    assert!(stderr.contains("WARN"), "no log line was written: {stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "colour codes in piped logs: {stderr:?}"
    );
}
