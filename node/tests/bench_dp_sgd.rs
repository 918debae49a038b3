//! `fedmmkt bench dp-sgd`: the JSON schema, and the exit code of a bad batch.

mod support;

use support::fedmmkt;

#[test]
fn json_has_one_finite_result_per_arch() {
    let out = fedmmkt(&["bench", "dp-sgd", "--json", "--arch", "mlp", "--batch", "8"]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let top = v.as_object().expect("an object");
    assert_eq!(top.len(), 1, "{v}");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{v}");
    let r = results[0].as_object().expect("a result object");
    let mut keys: Vec<&str> = r.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["arch", "batch", "dp_ms", "loop_ms", "plain_ms", "ratio"],
        "{v}"
    );
    assert_eq!(r["arch"], "mlp");
    assert_eq!(r["batch"], 8);
    for k in ["plain_ms", "dp_ms", "ratio", "loop_ms"] {
        let x = r[k].as_f64().expect("a number");
        assert!(x.is_finite() && x > 0.0, "{k} = {x}");
    }
    let ratio = r["dp_ms"].as_f64().unwrap_or(0.0) / r["plain_ms"].as_f64().unwrap_or(1.0);
    assert!((ratio - r["ratio"].as_f64().unwrap_or(0.0)).abs() < 1e-9 * ratio.max(1.0));
}

#[test]
fn bad_batch_exits_2() {
    for b in ["0", "-3", "4097"] {
        let out = fedmmkt(&["bench", "dp-sgd", "--batch", b, "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--batch {b}: {err}");
        assert!(err.contains("--batch"), "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = fedmmkt(&["bench", "dp-sgd", "--arch", "resnet"]);
    assert_eq!(out.status.code(), Some(2));
}
