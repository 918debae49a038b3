//! The node's privacy budget (ε_max at δ) and the answer to "does this release fit?".

use serde::{Deserialize, Serialize};

use crate::error::{check_delta, check_epsilon, Result};

/// The cap a node's owner sets: total ε over all releases may not exceed `epsilon` at `delta`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// ε_max.
    pub epsilon: f64,
    /// The δ at which ε is measured.
    pub delta: f64,
}

impl Budget {
    /// A validated budget (ε > 0 finite, 0 < δ < 1).
    pub fn new(epsilon: f64, delta: f64) -> Result<Self> {
        check_epsilon(epsilon)?;
        check_delta(delta)?;
        Ok(Self { epsilon, delta })
    }
}

/// Whether a prospective release fits the budget, with the numbers behind the answer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetCheck {
    /// True when the release may go ahead (always true without a budget).
    pub fits: bool,
    /// ε spent so far at `delta`.
    pub spent: f64,
    /// ε after this release at `delta`.
    pub after: f64,
    /// δ used for both numbers (the budget's, or the ledger's audit default).
    pub delta: f64,
    /// The cap, if one is set.
    pub budget: Option<Budget>,
}
