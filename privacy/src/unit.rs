//! The unit of privacy: what one differential-privacy guarantee protects.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::PrivacyError;

/// What neighbouring datasets differ in, i.e. what a guarantee protects (see `privacy/README.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivacyUnit {
    /// Every record of a node (an image with its caption and label), against the host, the other
    /// nodes and anyone who sees everything the node releases (inter-silo record-level DP, via DP-SGD).
    #[default]
    Record,
    /// A node's whole contribution in a round (needs many contributors per round to pay).
    Client,
}

impl PrivacyUnit {
    /// Every unit, in the order the CLI lists them.
    pub const ALL: [Self; 2] = [Self::Record, Self::Client];

    /// The unit's name, as in configuration files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Client => "client",
        }
    }
}

impl fmt::Display for PrivacyUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrivacyUnit {
    type Err = PrivacyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|u| u.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL.iter().map(|u| u.as_str()).collect();
                PrivacyError::invalid(
                    "privacy unit",
                    format!("expected one of {}, got {s:?}", valid.join(", ")),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_display_from_str_and_serde() {
        for u in PrivacyUnit::ALL {
            assert_eq!(u.to_string().parse::<PrivacyUnit>().unwrap(), u);
            let json = serde_json::to_string(&u).unwrap();
            assert_eq!(json, format!("\"{}\"", u.as_str()));
            assert_eq!(serde_json::from_str::<PrivacyUnit>(&json).unwrap(), u);
        }
        assert_eq!(PrivacyUnit::default(), PrivacyUnit::Record);
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "user".parse::<PrivacyUnit>().unwrap_err();
        assert!(err.is_invalid_argument());
        let msg = err.to_string();
        assert!(
            msg.contains("record") && msg.contains("client") && msg.contains("user"),
            "{msg}"
        );
        assert!("Record".parse::<PrivacyUnit>().is_err());
    }

    #[test]
    fn parse_error_fits_a_clap_value_parser() {
        // clap's `value_parser!` for a `FromStr` type needs `Err: Into<Box<dyn Error + Send + Sync>>`.
        fn boxed<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>>(_: E) {}
        boxed("x".parse::<PrivacyUnit>().unwrap_err());
    }
}
