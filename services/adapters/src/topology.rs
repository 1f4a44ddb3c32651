//! payoff's Kafka topics: names, keys and settings, in one place for every service and
//! for `payoff migrate`.
//!
//! Clicks, signups and orders are keyed by tenant + visitor and share one partition count
//! and one partitioner (`murmur2_random`, the Java client's), so one visitor's events land
//! in the same partition number of each topic (co-partitioned, SPEC §2). Adjustments and
//! lead status are keyed by the order or lead they change; engagement by campaign +
//! creator; credits by tenant + campaign + creator.

use payoff_core::event::{Event, Payload};

use crate::kafka::TopicSpec;

/// The partitioner every payoff producer uses (the Java client's default, so other
/// Kafka clients agree on where a key goes).
pub const PARTITIONER: &str = "murmur2_random";

/// Separates the parts of a record key. Ids may not contain control characters (§4), so
/// a key never collides with another.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// The header that marks a ledger input on `credits` that is not a credit (a payout or
/// manual adjustment from Admin, an engagement snapshot passed on by the attributor); its
/// value is the kind.
pub const INPUT_HEADER: &str = "payoff-input";
/// The [`INPUT_HEADER`] kind of an engagement snapshot (a `payoff.v1.Event`).
pub const ENGAGEMENT_INPUT: &str = "engagement";

/// Builds a record key from its parts.
pub fn key(parts: &[&str]) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(KEY_SEPARATOR);
        }
        key.push_str(part);
    }
    key
}

/// The topic names, with a common prefix (`payoff.` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Clicks, keyed by tenant + visitor.
    pub clicks: String,
    /// Signups, keyed by tenant + visitor.
    pub signups: String,
    /// Orders, keyed by tenant + visitor.
    pub orders: String,
    /// Adjustments, keyed by tenant + order.
    pub adjustments: String,
    /// Lead status, keyed by tenant + lead.
    pub lead_status: String,
    /// Engagement, keyed by tenant + campaign + creator.
    pub engagement: String,
    /// Credits, keyed by tenant + campaign + creator.
    pub credits: String,
    /// Program versions (compacted), keyed by tenant + version.
    pub programs: String,
    /// API keys issued through Admin (compacted; a tombstone revokes), keyed by tenant +
    /// key id; every service with keys follows it.
    pub api_keys: String,
    /// Records that could not be decoded or used, with reason headers.
    pub dead_letter: String,
    /// Attributed conversions, keyed like their corrections (tenant + order or lead), so
    /// that partition *p* of adjustments and lead status meets partition *p* of the index.
    pub order_index: String,
    /// The attributor's state changelog (compacted; partition *p* is task *p*'s state).
    pub attributor_changelog: String,
}

impl Topics {
    /// The topic names under `prefix`.
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |n: &str| format!("{prefix}{n}");
        Self {
            clicks: name("clicks"),
            signups: name("signups"),
            orders: name("orders"),
            adjustments: name("adjustments"),
            lead_status: name("lead-status"),
            engagement: name("engagement"),
            credits: name("credits"),
            programs: name("programs"),
            api_keys: name("api-keys"),
            dead_letter: name("dead-letter"),
            order_index: name("order-index"),
            attributor_changelog: name("attributor-changelog"),
        }
    }

    /// Every topic with its settings, for `payoff migrate`: event and credit topics share
    /// `partitions`; `programs` and `api-keys` are compacted; `credits` is never deleted (the ledger
    /// rebuilds from it).
    pub fn specs(&self, partitions: i32, replication: i32) -> Vec<TopicSpec> {
        let min_isr = replication.clamp(1, 2).to_string();
        let event = |name: &str| {
            TopicSpec::new(name, partitions, replication)
                .config("min.insync.replicas", min_isr.clone())
        };
        vec![
            event(&self.clicks),
            event(&self.signups),
            event(&self.orders),
            event(&self.adjustments),
            event(&self.lead_status),
            event(&self.engagement),
            // The ledger re-folds a partition from its beginning: credits are kept forever.
            event(&self.credits).config("retention.ms", "-1"),
            event(&self.dead_letter),
            event(&self.order_index),
            event(&self.attributor_changelog).compacted(),
            TopicSpec::new(&self.programs, 1, replication)
                .compacted()
                .config("min.insync.replicas", min_isr.clone()),
            TopicSpec::new(&self.api_keys, 1, replication)
                .compacted()
                .config("min.insync.replicas", min_isr),
        ]
    }
}

impl Topics {
    /// The topic and record key of an event: clicks, signups and orders by tenant +
    /// visitor (co-partitioned), adjustments by tenant + order, lead status by tenant +
    /// lead, engagement by tenant + campaign + creator.
    pub fn route(&self, tenant: &str, event: &Event) -> (&str, String) {
        match &event.payload {
            Payload::Click(c) => (&self.clicks, key(&[tenant, c.visitor.as_str()])),
            Payload::Signup(s) => (&self.signups, key(&[tenant, s.visitor.as_str()])),
            Payload::Order(o) => (&self.orders, key(&[tenant, o.visitor.as_str()])),
            Payload::Adjustment(a) => (&self.adjustments, key(&[tenant, a.order.as_str()])),
            Payload::LeadStatus(l) => (&self.lead_status, key(&[tenant, l.lead.as_str()])),
            Payload::Engagement(e) => (
                &self.engagement,
                key(&[tenant, e.campaign.as_str(), e.creator.as_str()]),
            ),
        }
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix("payoff.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_collide() {
        assert_ne!(key(&["a:b", "c"]), key(&["a", "b:c"]));
        assert_eq!(key(&["acme", "v1"]), "acme\u{1f}v1");
    }

    #[test]
    fn co_partitioned_topics_share_the_partition_count() {
        let specs = Topics::default().specs(6, 1);
        let p = |name: &str| specs.iter().find(|s| s.name == name).unwrap().partitions;
        assert_eq!(p("payoff.clicks"), p("payoff.orders"));
        assert_eq!(p("payoff.clicks"), p("payoff.signups"));
        let credits = specs.iter().find(|s| s.name == "payoff.credits").unwrap();
        assert!(
            credits
                .configs
                .iter()
                .any(|(k, v)| k == "retention.ms" && v == "-1")
        );
    }
}
