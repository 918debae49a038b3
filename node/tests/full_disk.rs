//! A full disk: four `fedmmkt run` processes, each with its data directory on a small tmpfs
//! of its own (mounted by this test, as root). A client's disk, then the host's, is filled
//! during the rounds until less than `node.min_free_mb` is free, and emptied again.
//!
//! - The full client releases nothing (its ledger gains no entry), says why, keeps running,
//!   and releases again once the space is back; the others' rounds go on without it.
//! - The full host completes no round (no node counts one: a round whose checkpoint cannot be
//!   stored does not count), says why, keeps running, and rounds resume once the space is back.
//! - Every ledger chain verifies at the end, and no ledger lost an entry.
//!
//! Where tmpfs cannot be mounted (not root, no tmpfs) the test says so and passes without
//! running.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use node::store::space::available_bytes;
use support::{configure_with, init, round_of, wait_for, Proc, PSK};

const N: usize = 4;
/// Size of each node's tmpfs.
const DISK_MB: u64 = 96;
/// `node.min_free_mb` of every node.
const RESERVE_MB: u64 = 24;
/// What filling leaves free: less than the reserve, enough for the node's small writes.
const LEAVE_MB: u64 = 12;

/// A tmpfs mounted on a directory; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size_mb: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Writes a filler file until `leave_mb` MiB are free; returns its path.
    fn fill(&self, leave_mb: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        while available_bytes(&self.path).unwrap() > (leave_mb << 20) + chunk.len() as u64 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Entries in node `p`'s ledger, and whether its chain verifies.
fn ledger_of(p: &Proc) -> (usize, bool) {
    let audit = p.audit();
    (
        audit["entries"].as_array().map_or(0, Vec::len),
        audit["chain"]["valid"] == true,
    )
}

fn log_of(p: &Proc) -> String {
    std::fs::read_to_string(p.dir.with_extension("log")).unwrap_or_default()
}

#[test]
fn a_full_disk_stops_releases_and_rounds_but_not_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..N).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let mut disks = Vec::new();
    for d in &dirs {
        match Tmpfs::mount(d, DISK_MB) {
            Ok(disk) => disks.push(disk),
            Err(why) => {
                eprintln!(
                    "SKIPPED a_full_disk_stops_releases_and_rounds_but_not_the_node: cannot \
                     mount a tmpfs here ({why}); run as root on Linux"
                );
                return;
            }
        }
    }
    let psk = tmp.path().join("psk.hex");
    std::fs::write(&psk, PSK).unwrap();
    let ids: Vec<String> = dirs.iter().map(|d| init(d, &psk)).collect();
    let tweak = |c: &mut node::config::NodeConfig| c.node.min_free_mb = RESERVE_MB;
    configure_with(&dirs[0], &ids, None, 10_000, tweak);
    let mut procs = vec![Proc::start(&dirs[0])];
    let boot = procs[0].addr.clone();
    for d in &dirs[1..] {
        configure_with(d, &ids, Some(&boot), 10_000, tweak);
        procs.push(Proc::start(d));
    }
    wait_for("round 1 on every node", Duration::from_secs(120), || {
        procs.iter().all(|p| round_of(p) >= 1)
    });
    let host = procs[0].status().unwrap().host.unwrap();
    let h = ids.iter().position(|id| *id == host).unwrap();
    let before: Vec<(usize, bool)> = procs.iter().map(ledger_of).collect();

    // 1. A client's disk fills up: it releases nothing, the others go on.
    let c = (h + 1) % N;
    let filler = disks[c].fill(LEAVE_MB);
    let (entries, _) = ledger_of(&procs[c]);
    let round = round_of(&procs[h]);
    wait_for(
        "two rounds without the full client",
        Duration::from_secs(120),
        || round_of(&procs[h]) >= round + 2,
    );
    assert!(
        procs[c].child.try_wait().unwrap().is_none(),
        "the full client died"
    );
    assert_eq!(
        ledger_of(&procs[c]).0,
        entries,
        "the full client released (its ledger grew)"
    );
    let log = log_of(&procs[c]);
    assert!(
        log.contains("declining the round") || log.contains("not releasing"),
        "the full client did not say why"
    );
    assert!(
        log.contains("node.min_free_mb"),
        "the reason names the reserve"
    );
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        "the client releasing again",
        Duration::from_secs(120),
        || ledger_of(&procs[c]).0 > entries,
    );

    // 2. The host's disk fills up: no round counts anywhere, the host keeps running.
    let filler = disks[h].fill(LEAVE_MB);
    let rounds: Vec<u64> = procs.iter().map(round_of).collect();
    wait_for(
        "the host refusing to count a round",
        Duration::from_secs(120),
        || log_of(&procs[h]).contains("the round does not count"),
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        procs[h].child.try_wait().unwrap().is_none(),
        "the full host died"
    );
    // No new round counts; a member that was not among the majority may still fetch the
    // last completed round's checkpoint and catch up to it.
    let during: Vec<u64> = procs.iter().map(round_of).collect();
    assert_eq!(
        during.iter().max(),
        rounds.iter().max(),
        "a round counted while the host's disk was full: {rounds:?} → {during:?}"
    );
    std::fs::remove_file(&filler).unwrap();
    let top = *rounds.iter().max().unwrap();
    wait_for("rounds resuming", Duration::from_secs(120), || {
        procs.iter().all(|p| round_of(p) > top)
    });

    // Nothing lost: every ledger kept every entry it had, and every chain verifies.
    for (i, p) in procs.iter_mut().enumerate() {
        assert!(p.child.try_wait().unwrap().is_none(), "node {i} died");
        let (now, valid) = ledger_of(p);
        assert!(valid, "node {i}'s ledger does not verify");
        assert!(now >= before[i].0, "node {i}'s ledger lost entries");
        let log = log_of(p);
        assert!(!log.contains("panicked"), "node {i} panicked");
    }
    eprintln!(
        "full client: {} rounds went on without it, released again once emptied; \
         full host: rounds stayed at {rounds:?}, resumed once emptied",
        round_of(&procs[h]).saturating_sub(round)
    );
}
