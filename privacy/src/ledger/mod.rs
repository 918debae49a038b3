//! The per-node privacy ledger: one signed, hash-chained sled entry per spend (a noised release,
//! or a stretch of DP-SGD training), written and flushed *before* the release or the training
//! runs, plus the budget that refuses spends over the cap.
//!
//! Every entry names its [`PrivacyUnit`]. All entries compose into one total, a guarantee of
//! the unit the entries share. A ledger mixing units is a clean guarantee of neither: a
//! client-level entry is charged for adding or removing a whole contribution (sensitivity C),
//! while one changed record moves the contribution by up to 2C, so keep a ledger to one unit.
//!
//! Layout (one sled tree, `privacy-ledger`): `m:meta` signed metadata (public key, order grid),
//! `e:` + big-endian seq → entry record, `m:head` signed (entry count, last hash),
//! `m:budget` the owner's cap. An entry and the head are written in one atomic batch, then the
//! database is flushed; a crash at any point leaves either the old or the new chain, both valid.
//!
//! What it protects against: anyone editing, deleting, reordering or truncating entries without
//! the node key is detected by [`Ledger::verify`]. What it does not: an attacker holding the
//! node key, or one who rolls the database back to an older copy of itself (an older, validly
//! signed head); anchoring the head elsewhere (e.g. in the host's round log) would catch that.

mod budget;
mod chain;
mod entry;
mod key;
#[cfg(test)]
mod old_entries;
mod spend;

pub use budget::{Budget, BudgetCheck};
pub use chain::{verify_raw, ChainReport};
pub use entry::LedgerEntry;
pub use key::{NodeKey, KEY_FILE};
pub use spend::{Spend, TrainingCost};

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::accountant::{default_orders, RdpAccountant};
use crate::error::{check_delta, PrivacyError, Result};
use crate::mechanism::{Charged, MechanismKind, Release, ReleaseCost};
use crate::unit::PrivacyUnit;
use entry::{seal_entry, seal_head, to_hex, MetaBody, StoredMeta};

/// Name of the sled database directory inside the data directory.
pub const DB_DIR: &str = "db";
/// The sled tree holding the ledger.
pub const TREE: &str = "privacy-ledger";
/// δ at which ε is reported when no budget is set.
pub const DEFAULT_AUDIT_DELTA: f64 = 1e-5;

pub(crate) const ENTRY_PREFIX: &[u8] = b"e:";
pub(crate) const HEAD_KEY: &[u8] = b"m:head";
pub(crate) const META_KEY: &[u8] = b"m:meta";
const BUDGET_KEY: &[u8] = b"m:budget";

/// Where a spend is used: which round, which local dataset, and what it protects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeContext {
    /// Federation round.
    pub round: u64,
    /// Identifier of the local dataset the upload or training comes from.
    pub dataset_id: String,
    /// The unit the spend's guarantee protects (training is always [`PrivacyUnit::Record`]).
    pub unit: PrivacyUnit,
}

/// In-memory view of the verified chain.
struct State {
    next_seq: u64,
    head_hash: [u8; 32],
    total: RdpAccountant,
    broken: Option<String>,
    budget: Option<Budget>,
}

/// A node's privacy ledger (see the module docs).
pub struct Ledger {
    db: sled::Db,
    tree: sled::Tree,
    key: NodeKey,
    orders: Vec<f64>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("public_key", &to_hex(self.key.public_key()))
            .field("orders", &self.orders.len())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `data_dir`: key `node_key.pk8`, sled database `db/`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| PrivacyError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let key = NodeKey::load_or_create(data_dir)?;
        let db = sled::open(Self::db_path(data_dir))?;
        Self::with_db(db, key)
    }

    /// Opens an existing ledger without creating anything (for audits): the key file and the
    /// database must already be there.
    pub fn open_existing(data_dir: &Path) -> Result<Self> {
        let db_path = Self::db_path(data_dir);
        if !db_path.is_dir() {
            return Err(PrivacyError::Io {
                path: db_path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no privacy ledger here"),
            });
        }
        let key = NodeKey::load(&data_dir.join(KEY_FILE))?;
        let db = sled::open(db_path)?;
        Self::with_db(db, key)
    }

    /// Path of the sled database inside `data_dir`.
    pub fn db_path(data_dir: &Path) -> PathBuf {
        data_dir.join(DB_DIR)
    }

    /// Opens the ledger inside an already open sled database (shared with the rest of the node).
    pub fn with_db(db: sled::Db, key: NodeKey) -> Result<Self> {
        let tree = db.open_tree(TREE)?;
        if tree.get(META_KEY)?.is_none() && tree.is_empty() {
            let body = MetaBody {
                version: 1,
                public_key: to_hex(key.public_key()),
                orders: default_orders(),
                created_unix_ms: now_ms(),
            };
            let body = serde_json::to_string(&body).map_err(|e| PrivacyError::Malformed {
                what: "ledger metadata",
                reason: e.to_string(),
            })?;
            let signature = to_hex(&key.sign(&entry::meta_message(body.as_bytes())));
            let meta = serde_json::to_vec(&StoredMeta { body, signature });
            let head = serde_json::to_vec(&seal_head(0, &entry::GENESIS_HASH, &key));
            let (meta, head) = match (meta, head) {
                (Ok(m), Ok(h)) => (m, h),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(PrivacyError::Malformed {
                        what: "ledger metadata",
                        reason: e.to_string(),
                    })
                }
            };
            let mut batch = sled::Batch::default();
            batch.insert(META_KEY, meta);
            batch.insert(HEAD_KEY, head);
            tree.apply_batch(batch)?;
            db.flush()?;
        }
        let loaded = chain::load_and_verify(&tree, key.public_key())?;
        let orders = loaded
            .meta
            .as_ref()
            .map(|m| m.orders.clone())
            .unwrap_or_else(default_orders);
        let mut total = RdpAccountant::with_orders(orders.clone())?;
        for e in &loaded.entries {
            total.compose_curve(&e.rdp)?;
        }
        let budget = read_budget(&tree)?;
        let state = State {
            next_seq: loaded.entries.len() as u64,
            head_hash: loaded.head_hash,
            total,
            broken: loaded.report.problem.clone(),
            budget,
        };
        Ok(Self {
            db,
            tree,
            key,
            orders,
            state: Mutex::new(state),
        })
    }

    /// The RDP order grid every entry's curve is stored on.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The node's public key (hex), which signs every entry.
    pub fn public_key_hex(&self) -> String {
        to_hex(self.key.public_key())
    }

    /// The owner's cap, if set.
    pub fn budget(&self) -> Result<Option<Budget>> {
        Ok(self.lock()?.budget)
    }

    /// Sets (or replaces) the cap; durable before returning.
    pub fn set_budget(&self, budget: Budget) -> Result<()> {
        let budget = Budget::new(budget.epsilon, budget.delta)?;
        let mut st = self.lock()?;
        let bytes = serde_json::to_vec(&budget).map_err(|e| PrivacyError::Malformed {
            what: "budget",
            reason: e.to_string(),
        })?;
        self.tree.insert(BUDGET_KEY, bytes)?;
        self.db.flush()?;
        st.budget = Some(budget);
        Ok(())
    }

    /// ε spent so far at `delta` (RDP composition of every entry, Balle et al. conversion).
    pub fn epsilon_spent(&self, delta: f64) -> Result<crate::accountant::EpsilonAt> {
        check_delta(delta)?;
        self.lock()?.total.epsilon(delta)
    }

    /// Number of entries in the verified chain.
    pub fn len(&self) -> Result<u64> {
        Ok(self.lock()?.next_seq)
    }

    /// True when nothing has been recorded yet.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Would a release with this cost fit the budget? (Nothing is recorded.)
    pub fn check(&self, cost: &ReleaseCost) -> Result<BudgetCheck> {
        let curve = cost.rdp_curve(&self.orders)?;
        let st = self.lock()?;
        Self::check_locked(&st, &curve)
    }

    /// Would this much DP-SGD training fit the budget? (Nothing is recorded.)
    pub fn check_training(&self, cost: &TrainingCost) -> Result<BudgetCheck> {
        cost.validate()?;
        let curve = cost.rdp_curve(&self.orders)?;
        let st = self.lock()?;
        Self::check_locked(&st, &curve)
    }

    fn check_locked(st: &State, curve: &[f64]) -> Result<BudgetCheck> {
        let delta = st.budget.map_or(DEFAULT_AUDIT_DELTA, |b| b.delta);
        let spent = st.total.epsilon(delta)?.epsilon;
        let mut after = st.total.clone();
        after.compose_curve(curve)?;
        let after = after.epsilon(delta)?.epsilon;
        let fits = st.budget.is_none_or(|b| after <= b.epsilon);
        Ok(BudgetCheck {
            fits,
            spent,
            after,
            delta,
            budget: st.budget,
        })
    }

    /// Records `release` durably (write-ahead, flushed) and returns it ready to run.
    ///
    /// Refuses with [`PrivacyError::BudgetExceeded`] if it would take ε over the cap, and with
    /// [`PrivacyError::ChainBroken`] if the ledger did not verify when opened.
    pub fn charge<R: Release>(&self, release: R, ctx: &ChargeContext) -> Result<Charged<R>> {
        let cost = Spend::Release(release.cost().clone());
        let seq = self.append(cost, ctx)?;
        Ok(Charged::new(release, seq))
    }

    /// Records `cost` (DP-SGD training about to run) durably and returns the entry's seq; the
    /// training may start only after this returns.
    ///
    /// `ctx.unit` must be [`PrivacyUnit::Record`]. Refuses like [`Ledger::charge`]:
    /// [`PrivacyError::BudgetExceeded`] over the cap (nothing is recorded),
    /// [`PrivacyError::ChainBroken`] when the chain did not verify.
    pub fn charge_training(&self, cost: &TrainingCost, ctx: &ChargeContext) -> Result<u64> {
        cost.validate()?;
        if ctx.unit != PrivacyUnit::Record {
            return Err(PrivacyError::invalid(
                "privacy unit",
                format!("DP-SGD training protects records, got unit {}", ctx.unit),
            ));
        }
        self.append(Spend::Training(cost.clone()), ctx)
    }

    /// The write-ahead append shared by every charge: chain and budget checks, then the entry
    /// and the new head in one sled batch, flushed before returning the entry's seq.
    fn append(&self, cost: Spend, ctx: &ChargeContext) -> Result<u64> {
        let curve = cost.rdp_curve(&self.orders)?;
        let mut st = self.lock()?;
        if let Some(problem) = &st.broken {
            return Err(PrivacyError::ChainBroken(format!(
                "{problem}; refusing to record new spends"
            )));
        }
        let check = Self::check_locked(&st, &curve)?;
        if !check.fits {
            if let Some(b) = check.budget {
                return Err(PrivacyError::BudgetExceeded {
                    spent: check.spent,
                    would_be: check.after,
                    cap: b.epsilon,
                    delta: b.delta,
                });
            }
        }
        let seq = st.next_seq;
        let entry = LedgerEntry {
            seq,
            prev_hash: to_hex(&st.head_hash),
            round: ctx.round,
            time_unix_ms: now_ms(),
            dataset_id: ctx.dataset_id.clone(),
            unit: ctx.unit,
            cost,
            rdp: curve.clone(),
        };
        let (record, hash) = seal_entry(&entry, &self.key)?;
        let head = seal_head(seq + 1, &hash, &self.key);
        let encode = |what: &'static str, r: serde_json::Result<Vec<u8>>| {
            r.map_err(|e| PrivacyError::Malformed {
                what,
                reason: e.to_string(),
            })
        };
        let mut batch = sled::Batch::default();
        batch.insert(
            entry_key(seq).to_vec(),
            encode("ledger entry", serde_json::to_vec(&record))?,
        );
        batch.insert(HEAD_KEY, encode("ledger head", serde_json::to_vec(&head))?);
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        st.total.compose_curve(&curve)?;
        st.next_seq = seq + 1;
        st.head_hash = hash;
        Ok(seq)
    }

    /// Re-reads the store and verifies the whole chain against this node's key.
    pub fn verify(&self) -> Result<ChainReport> {
        Ok(chain::load_and_verify(&self.tree, self.key.public_key())?.report)
    }

    /// Every entry of the verified prefix of the chain, re-read from the store.
    pub fn entries(&self) -> Result<Vec<LedgerEntry>> {
        Ok(chain::load_and_verify(&self.tree, self.key.public_key())?.entries)
    }

    /// Everything the data owner needs: entries with cumulative ε, budget, remainder, integrity.
    pub fn audit(&self) -> Result<AuditReport> {
        let loaded = chain::load_and_verify(&self.tree, self.key.public_key())?;
        let budget = self.budget()?;
        let delta = budget.map_or(DEFAULT_AUDIT_DELTA, |b| b.delta);
        let mut acc = RdpAccountant::with_orders(self.orders.clone())?;
        let mut rows = Vec::with_capacity(loaded.entries.len());
        for e in &loaded.entries {
            acc.compose_curve(&e.rdp)?;
            let eps = acc.epsilon(delta)?;
            rows.push(AuditRow::new(e, eps));
        }
        let spent = acc.epsilon(delta)?;
        Ok(AuditReport {
            public_key: self.public_key_hex(),
            delta,
            budget,
            epsilon_spent: spent.epsilon,
            order: spent.order,
            remaining: budget.map(|b| (b.epsilon - spent.epsilon).max(0.0)),
            chain: loaded.report,
            entries: rows,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| PrivacyError::ChainBroken("ledger state poisoned by a panic".into()))
    }
}

/// One audit table row: an entry and the cumulative ε up to and including it.
///
/// Every row has every key in JSON. The fields shared by both kinds of spend (`clip`,
/// `noise_multiplier`, `charged_noise_multiplier`, `sample_rate`) are always set; for training,
/// `sample_rate` is the per-record Poisson rate and the charged z equals the nominal z. The
/// release-only fields (`expected_participants`, `min_participants`, `dimension`,
/// `aggregate_rho`) are `null` on training rows, and the training-only fields (`records`,
/// `steps`) are `null` on release rows; `mechanism` is `dp_sgd` exactly on training rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Entry number.
    pub seq: u64,
    /// Federation round.
    pub round: u64,
    /// Recording time, ms since the Unix epoch.
    pub time_unix_ms: u64,
    /// Local dataset.
    pub dataset_id: String,
    /// What the entry protects (older reports without it were all client-level).
    #[serde(default = "client_unit")]
    pub unit: PrivacyUnit,
    /// Mechanism (`dp_sgd` for training).
    pub mechanism: MechanismKind,
    /// L2 clip C: of the whole upload for a release, of each example's gradient for training.
    pub clip: f64,
    /// Nominal noise multiplier z.
    pub noise_multiplier: f64,
    /// Noise multiplier charged (dropouts and rounding included; z itself for training).
    pub charged_noise_multiplier: f64,
    /// Sampling rate q: of clients per round for a release, of records per step for training.
    pub sample_rate: f64,
    /// n (releases only).
    pub expected_participants: Option<u32>,
    /// m (releases only).
    pub min_participants: Option<u32>,
    /// Upload length (releases only).
    pub dimension: Option<usize>,
    /// OpenDP ρ of the aggregate (releases only).
    pub aggregate_rho: Option<f64>,
    /// Private dataset size (training only).
    pub records: Option<u64>,
    /// DP-SGD steps T (training only).
    pub steps: Option<u64>,
    /// ε after this entry, at the report's δ.
    pub epsilon_cumulative: f64,
    /// Order attaining it.
    pub order: f64,
}

impl AuditRow {
    /// The row of entry `e`, with the cumulative ε `eps` up to and including it.
    fn new(e: &LedgerEntry, eps: crate::accountant::EpsilonAt) -> Self {
        let (clip, noise_multiplier, charged_noise_multiplier, sample_rate) = match &e.cost {
            Spend::Release(c) => (
                c.config.clip,
                c.config.noise_multiplier,
                c.charged_noise_multiplier,
                c.config.sample_rate,
            ),
            Spend::Training(c) => (
                c.clip,
                c.noise_multiplier,
                c.noise_multiplier,
                c.sample_rate,
            ),
        };
        let release = e.cost.as_release();
        let training = e.cost.as_training();
        Self {
            seq: e.seq,
            round: e.round,
            time_unix_ms: e.time_unix_ms,
            dataset_id: e.dataset_id.clone(),
            unit: e.unit,
            mechanism: e.cost.mechanism(),
            clip,
            noise_multiplier,
            charged_noise_multiplier,
            sample_rate,
            expected_participants: release.map(|c| c.config.expected_participants),
            min_participants: release.map(|c| c.config.min_participants),
            dimension: release.map(|c| c.config.dimension),
            aggregate_rho: release.map(|c| c.aggregate_rho),
            records: training.map(|c| c.records),
            steps: training.map(|c| c.steps),
            epsilon_cumulative: eps.epsilon,
            order: eps.order,
        }
    }
}

/// The unit of audit rows that do not name one (reports from before units were recorded).
fn client_unit() -> PrivacyUnit {
    PrivacyUnit::Client
}

/// The ledger audit: `fedmmkt privacy audit` prints this (as JSON with `--json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// The node key that signs the ledger (hex).
    pub public_key: String,
    /// δ at which ε is reported.
    pub delta: f64,
    /// The cap, if set.
    pub budget: Option<Budget>,
    /// Total ε spent.
    pub epsilon_spent: f64,
    /// Order attaining it.
    pub order: f64,
    /// ε left under the cap, if set.
    pub remaining: Option<f64>,
    /// Integrity verdict.
    pub chain: ChainReport,
    /// The verified entries, oldest first.
    pub entries: Vec<AuditRow>,
}

fn entry_key(seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(ENTRY_PREFIX);
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn read_budget(tree: &sled::Tree) -> Result<Option<Budget>> {
    match tree.get(BUDGET_KEY)? {
        None => Ok(None),
        Some(bytes) => decode_budget(&bytes).map(Some),
    }
}

/// Decodes and validates the stored budget record (`m:budget`), as opening a ledger does;
/// public so the record can be fuzzed and checked offline.
pub fn decode_budget(bytes: &[u8]) -> Result<Budget> {
    let b: Budget = serde_json::from_slice(bytes).map_err(|e| PrivacyError::Malformed {
        what: "budget",
        reason: e.to_string(),
    })?;
    Budget::new(b.epsilon, b.delta)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
