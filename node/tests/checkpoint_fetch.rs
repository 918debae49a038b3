//! Checkpoints beyond the majority: the host sends each round's checkpoint to as many members
//! as make a majority, and every other member fetches it from a holder, another member before
//! the host, as a delta from the checkpoint it holds. A member that joins late catches up from
//! a holder too, and every node ends up holding the same checkpoint.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use node::store::NodeStore;
use support::{configure_with, init, round_of, wait_for, Proc, PSK};

/// (round, from, delta) of every "checkpoint fetched" line in a node's log.
fn fetches(dir: &Path) -> Vec<(u64, String, bool)> {
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("checkpoint fetched"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or_default()
                    .to_string()
            };
            (
                field("round=").parse().unwrap(),
                field("from="),
                field("delta=") == "true",
            )
        })
        .collect()
}

#[test]
fn members_beyond_the_majority_fetch_checkpoints_from_members_and_a_late_one_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let psk = tmp.path().join("psk.hex");
    std::fs::write(&psk, PSK).unwrap();
    let dirs: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let ids: Vec<String> = dirs.iter().map(|d| init(d, &psk)).collect();
    // Four members: the host and two replicas are a majority. Node 3 joins after round 2,
    // so the first rounds start with three of the four.
    let tweak = |c: &mut node::config::NodeConfig| c.round.start_share = 0.75;
    configure_with(&dirs[0], &ids, None, 6, tweak);
    let mut procs = vec![Proc::start(&dirs[0])];
    let boot = procs[0].addr.clone();
    for d in &dirs[1..] {
        configure_with(d, &ids, Some(&boot), 6, tweak);
    }
    for d in &dirs[1..3] {
        procs.push(Proc::start(d));
    }
    wait_for(
        "round 2 on the first three",
        Duration::from_secs(120),
        || procs.iter().all(|p| round_of(p) >= 2),
    );
    let host = procs[0].status().unwrap().host.unwrap();
    procs.push(Proc::start(&dirs[3]));
    wait_for("round 6 on every node", Duration::from_secs(180), || {
        procs.iter().all(|p| round_of(p) >= 6)
    });
    let statuses: Vec<_> = procs.iter().map(|p| p.status().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| s.host.as_deref() == Some(&*host)),
        "one host throughout: {statuses:?}"
    );
    drop(procs);

    // The late member's first checkpoint came whole, from a member that is not the host.
    let late = fetches(&dirs[3]);
    let (round, from, delta) = late.first().cloned().expect("node 3 fetched a checkpoint");
    assert!(round >= 2, "{late:?}");
    assert_ne!(
        from, host,
        "fetched from the host although members held it: {late:?}"
    );
    assert!(!delta, "it held nothing to apply a delta to: {late:?}");
    // Once the four are in, each round leaves one member out of the majority: it fetches
    // the round's checkpoint, as a delta, from another member.
    let all: Vec<(u64, String, bool)> = dirs.iter().flat_map(|d| fetches(d)).collect();
    println!("host {host}\nfetches (round, from, delta): {all:?}");
    let later: Vec<_> = all.iter().filter(|(r, _, _)| *r >= 4).collect();
    assert!(!later.is_empty(), "no member fetched rounds 4–6: {all:?}");
    assert!(
        later.iter().any(|(_, from, delta)| *delta && *from != host),
        "no delta fetched from a member: {all:?}"
    );
    // Every node holds the same checkpoint of round 6.
    let hashes: Vec<_> = dirs
        .iter()
        .map(|d| {
            let store = NodeStore::open_existing(d).unwrap();
            store
                .checkpoint_hash(6)
                .unwrap()
                .expect("round 6's checkpoint")
        })
        .collect();
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
}
