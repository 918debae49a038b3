//! The faults a testnet run can inject, as given on the command line.

use std::str::FromStr;

/// One fault and the round it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the host during round `round` (it restarts as a client once a new host is elected).
    KillHost {
        /// The round.
        round: u64,
    },
    /// SIGKILL `count` clients during round `round`'s secure aggregation (they restart after it).
    Drop {
        /// Clients to kill.
        count: usize,
        /// The round.
        round: u64,
    },
    /// SIGKILL node `node` during round `round` and restart it at once.
    Restart {
        /// Node index.
        node: usize,
        /// The round.
        round: u64,
    },
    /// Start node `node` only once round `round` is due (it is a member from the start, so
    /// the first rounds start with the others): it must catch up on the checkpoints it missed.
    Join {
        /// Node index.
        node: usize,
        /// The round.
        round: u64,
    },
}

impl Fault {
    /// The round the fault hits.
    pub fn round(&self) -> u64 {
        match *self {
            Fault::KillHost { round }
            | Fault::Drop { round, .. }
            | Fault::Restart { round, .. }
            | Fault::Join { round, .. } => round,
        }
    }

    /// Short name for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillHost { .. } => "kill-host",
            Fault::Drop { .. } => "drop",
            Fault::Restart { .. } => "restart",
            Fault::Join { .. } => "join",
        }
    }
}

/// `A@R`: a count or node index, and a round ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtRound {
    /// The number before `@`.
    pub what: usize,
    /// The round after `@`.
    pub round: u64,
}

impl FromStr for AtRound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (what, round) = s
            .split_once('@')
            .ok_or_else(|| format!("`{s}`: expected N@ROUND, e.g. 2@3"))?;
        let what = what
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{what}` is not a non-negative integer"))?;
        let round: u64 = round
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{round}` is not a round number"))?;
        if round == 0 {
            return Err(format!("`{s}`: rounds start at 1"));
        }
        Ok(Self { what, round })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_round_parses_and_rejects() {
        assert_eq!("2@3".parse::<AtRound>(), Ok(AtRound { what: 2, round: 3 }));
        assert!("2".parse::<AtRound>().is_err());
        assert!("x@3".parse::<AtRound>().is_err());
        assert!("2@0".parse::<AtRound>().is_err());
        assert!("-1@2".parse::<AtRound>().is_err());
        let f = Fault::Drop { count: 1, round: 4 };
        assert_eq!((f.round(), f.kind()), (4, "drop"));
    }
}
