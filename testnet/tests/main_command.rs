//! The README's main command as a new user runs it: `fedmmkt-testnet up` from the repository
//! root with the default `--out` (a relative path), here in tiny mode so it takes seconds.

use std::path::Path;
use std::process::Command;

#[test]
fn the_main_command_runs_from_the_repository_root_with_the_default_out() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testnet crate sits in the workspace root");
    let out = Command::new(env!("CARGO_BIN_EXE_fedmmkt-testnet"))
        .current_dir(root)
        .args(["up", "--tiny"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("fedmmkt-testnet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    assert!(stdout.contains("report: out/testnet/report.md"), "{stdout}");
    let report = root.join("out/testnet/report.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report.json written"))
            .expect("report.json is JSON");
    assert_eq!(json["ok"], serde_json::Value::Bool(true), "{json}");
    assert_eq!(json["rounds_completed"], json["rounds_requested"]);
    assert_eq!(json["rounds_completed"], serde_json::json!(5));
    assert_eq!(json["ledgers_verified"], serde_json::Value::Bool(true));
    assert_eq!(json["budget_exceeded"], serde_json::Value::Bool(false));
    assert_eq!(json["double_counted_rounds"], serde_json::json!(0));
    assert!(
        json["failures"].as_array().is_some_and(|f| f.is_empty()),
        "{json}"
    );
    assert!(root.join("out/testnet/report.md").is_file());
}
