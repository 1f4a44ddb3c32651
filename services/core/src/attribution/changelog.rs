//! [`AttributionState`] as keyed entries, so that a service can keep it in a compacted
//! changelog: after applying facts it writes the current entry of every key they changed
//! ([`StateKey::changed_by`], [`AttributionState::entry`]), a tombstone for a key that no
//! longer has one, and on restore folds the latest entry of each key back in
//! ([`AttributionState::restore`]). Restoring every entry gives a state that decides
//! exactly as the original.

use serde::{Deserialize, Serialize};

use super::{AttributionState, Digest, Fact, VisitorState};
use crate::time::Timestamp;

/// The key of one entry: which map, and the digest of the id it is kept under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StateKey {
    /// An event id seen (dedupe).
    Seen(Digest),
    /// A visitor.
    Visitor(Digest),
    /// An IP hash's click counter.
    Ip(Digest),
}

/// The value of one entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StateEntry {
    /// When the event id was seen.
    Seen(Timestamp),
    /// What is remembered of the visitor.
    Visitor(VisitorState),
    /// The minute counted and the clicks in it.
    Ip {
        /// Minute index since the epoch.
        minute: i64,
        /// Clicks counted in that minute.
        clicks: u32,
    },
}

/// A borrowed [`StateEntry`]: it serializes exactly as the entry it borrows (same enum
/// and variants), so a service can write the current entry without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename = "StateEntry")]
pub enum StateEntryRef<'a> {
    /// When the event id was seen.
    Seen(Timestamp),
    /// What is remembered of the visitor.
    Visitor(&'a VisitorState),
    /// The minute counted and the clicks in it.
    Ip {
        /// Minute index since the epoch.
        minute: i64,
        /// Clicks counted in that minute.
        clicks: u32,
    },
}

impl StateEntryRef<'_> {
    /// The owned entry.
    pub fn to_owned(self) -> StateEntry {
        match self {
            Self::Seen(at) => StateEntry::Seen(at),
            Self::Visitor(v) => StateEntry::Visitor(v.clone()),
            Self::Ip { minute, clicks } => StateEntry::Ip { minute, clicks },
        }
    }
}

impl StateKey {
    /// The key a fact changes when applied, if any.
    pub fn changed_by(fact: &Fact) -> Option<Self> {
        match fact {
            Fact::Seen { event, .. } => Some(Self::Seen(*event)),
            Fact::IpClick { ip, .. } => Some(Self::Ip(*ip)),
            Fact::Touched { visitor, .. } | Fact::Ordered { visitor } => {
                Some(Self::Visitor(*visitor))
            }
            _ => None,
        }
    }
}

impl AttributionState {
    /// The current entry of a key; `None` when the state has none (write a tombstone).
    pub fn entry(&self, key: StateKey) -> Option<StateEntry> {
        self.entry_ref(key).map(StateEntryRef::to_owned)
    }

    /// [`AttributionState::entry`], borrowed.
    pub fn entry_ref(&self, key: StateKey) -> Option<StateEntryRef<'_>> {
        match key {
            StateKey::Seen(d) => self.seen.get(&d).copied().map(StateEntryRef::Seen),
            StateKey::Visitor(d) => self.visitors.get(&d).map(StateEntryRef::Visitor),
            StateKey::Ip(d) => self
                .ip_minutes
                .get(&d)
                .map(|&(minute, clicks)| StateEntryRef::Ip { minute, clicks }),
        }
    }

    /// Sets a key's entry (or removes it, for `None`): the restore of a changelog record.
    /// An entry of another kind than its key is ignored.
    pub fn restore(&mut self, key: StateKey, entry: Option<StateEntry>) {
        match (key, entry) {
            (StateKey::Seen(d), Some(StateEntry::Seen(at))) => {
                self.oldest.seen = self.oldest.seen.min(at);
                self.seen.insert(d, at);
            }
            (StateKey::Visitor(d), Some(StateEntry::Visitor(v))) => {
                if let Some(earliest) = v.earliest() {
                    self.oldest.visitor = self.oldest.visitor.min(earliest);
                }
                self.visitors.insert(d, v);
            }
            (StateKey::Ip(d), Some(StateEntry::Ip { minute, clicks })) => {
                self.oldest.ip_minute = self.oldest.ip_minute.min(minute);
                self.ip_minutes.insert(d, (minute, clicks));
            }
            (StateKey::Seen(d), None) => {
                self.seen.remove(&d);
            }
            (StateKey::Visitor(d), None) => {
                self.visitors.remove(&d);
            }
            (StateKey::Ip(d), None) => {
                self.ip_minutes.remove(&d);
            }
            _ => {}
        }
    }

    /// Every key with an entry, in a stable order (tests and snapshots).
    pub fn keys(&self) -> Vec<StateKey> {
        let mut keys: Vec<StateKey> = self
            .seen
            .keys()
            .map(|d| StateKey::Seen(*d))
            .chain(self.visitors.keys().map(|d| StateKey::Visitor(*d)))
            .chain(self.ip_minutes.keys().map(|d| StateKey::Ip(*d)))
            .collect();
        keys.sort_unstable();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::{Touch, apply, digest},
        ids::{CampaignId, CreatorId, EventId, VisitorId},
    };

    fn id<T>(parse: fn(&str, &str) -> Result<T, crate::Violation>, text: &str) -> T {
        parse("id", text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn restoring_every_changed_entry_rebuilds_the_state() {
        let visitor = digest(id(VisitorId::parse, "v1").as_str());
        let facts = vec![
            Fact::Seen {
                event: digest(id(EventId::parse, "e1").as_str()),
                at: Timestamp(1_000),
            },
            Fact::IpClick {
                ip: digest("ip"),
                minute: 0,
            },
            Fact::Touched {
                visitor,
                touch: Touch {
                    click: id(EventId::parse, "e1"),
                    at: Timestamp(1_000),
                    creator: id(CreatorId::parse, "c"),
                    campaign: id(CampaignId::parse, "k"),
                    fraud: None,
                },
                paid: Some(None),
            },
            Fact::Ordered { visitor },
        ];
        let mut state = AttributionState::default();
        let mut changed = Vec::new();
        for fact in &facts {
            apply(&mut state, fact);
            changed.extend(StateKey::changed_by(fact));
        }
        let mut restored = AttributionState::default();
        for key in &changed {
            restored.restore(*key, state.entry(*key));
        }
        assert_eq!(restored.keys(), state.keys());
        for key in state.keys() {
            assert_eq!(restored.entry(key), state.entry(key));
        }

        let mut expired = Vec::new();
        state.expire_tracked(Timestamp(100_000_000), |k| expired.push(k));
        expired.sort_unstable();
        for key in &expired {
            restored.restore(*key, state.entry(*key));
        }
        assert_eq!(restored.keys(), state.keys());
        assert!(state.entry(changed[0]).is_none(), "the seen id expired");
        assert!(
            state.visitors() == 1,
            "the visitor stays: it has ordered (new-customer checks)"
        );
    }
}
