//! Progress markers on the `credits` topic: how far in event time one attributor task has
//! decided a tenant's credits.
//!
//! Credits of one (campaign, creator) come from every attributor task (visitors are
//! spread over partitions), so their order in a `credits` partition depends on how fast
//! each task ran. The ledger's fold depends on order (tier ordinals, caps, milestones),
//! so the ledger holds credits back and folds them in event-time order once every task
//! has passed them. To tell it how far a task has come, each attributor transaction ends
//! with one marker per tenant whose progress moved, written to every `credits` partition.
//!
//! A marker says: task `source` (of `sources`) will emit no more credits of `tenant`
//! with an event time before `before`, except for events that arrive later than the
//! grace period (those are folded when they arrive, as the offline replay does).
//! Markers carry the header [`HEADER`] and a JSON payload; they have no key.

use payoff_core::time::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{AdapterError, Result};

/// The header that marks a progress record (its value is `"1"`).
pub const HEADER: &str = "payoff-progress";

/// One progress marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The tenant.
    pub tenant: String,
    /// The attributor task (its input partition number).
    pub source: u32,
    /// How many tasks there are (the input topics' partition count).
    pub sources: u32,
    /// No more credits of the tenant before this event time (ms since the epoch).
    pub before: i64,
}

impl Progress {
    /// The marker's event time.
    pub fn before(&self) -> Timestamp {
        Timestamp(self.before)
    }

    /// The record payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("a plain struct serializes"))
    }

    /// Decodes a payload.
    pub fn decode(payload: &[u8]) -> Result<Self> {
        let progress: Self = serde_json::from_slice(payload)
            .map_err(|e| AdapterError::Config(format!("bad progress marker: {e}")))?;
        if progress.source >= progress.sources {
            return Err(AdapterError::Config(format!(
                "bad progress marker: source {} of {}",
                progress.source, progress.sources
            )));
        }
        Ok(progress)
    }
}

/// True when a record's headers mark it as a progress marker.
pub fn is_marker<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> bool {
    headers.into_iter().any(|(k, _)| k == HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_bad_ones_are_refused() {
        let p = Progress {
            tenant: "acme".into(),
            source: 3,
            sources: 12,
            before: 1_700_000_000_000,
        };
        assert_eq!(Progress::decode(&p.encode()).unwrap(), p);
        let bad = Progress { source: 12, ..p };
        assert!(Progress::decode(&bad.encode()).is_err());
        assert!(Progress::decode(b"{").is_err());
        assert!(is_marker([("x", None), (HEADER, Some(&b"1"[..]))]));
        assert!(!is_marker([("payoff-reason", None)]));
    }
}
