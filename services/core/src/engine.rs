//! The whole pipeline in one process, with no IO: reorder buffer → attribution (with its
//! conversion index) → one ledger book per (campaign, creator) → projections.
//!
//! This is the oracle the streaming services are checked against, and what `payoff
//! replay` runs. It calls exactly the `decide`/`apply` functions the services call.

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    FastHash, FastMap,
    attribution::{
        self, AttributionState, ConversionKey, ConversionRecord, EXPIRY_EVERY, Fact, Skip,
        reorder::ReorderBuffer,
    },
    credit::{Credit, CreditKind, Explanation, FraudReason},
    event::{Event, Payload},
    ids::{CampaignId, CreatorId},
    kpi::KpiDelta,
    ledger::{self, Book, LedgerEntry, LedgerFact, LedgerInput, LedgerSkip},
    money::Currency,
    program::ProgramHistory,
    projection::{self, Balance, EntryStatus, KpiReport, TierProgress},
    time::{Duration, Period, Timestamp},
};

/// Counts of what happened to the input, for reports and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events received.
    pub events: u64,
    /// Events by type.
    pub by_type: Tally,
    /// Repeated event ids (no effect).
    pub duplicates: u64,
    /// Events that changed nothing, by reason.
    pub skipped: BTreeMap<Skip, u64>,
    /// Fraud flags by reason.
    pub flagged: BTreeMap<FraudReason, u64>,
    /// Conversions with no credit.
    pub unattributed: u64,
    /// Credits emitted, by kind.
    pub credits: Tally,
    /// Ledger inputs the ledger could not use, by reason.
    pub ledger_skipped: BTreeMap<String, u64>,
}

/// Counts by name, for a handful of names known at compile time (event types, credit
/// kinds): a short list searched by the name's address first, as every event adds to
/// one. It compares, serializes and iterates as a map in name order.
#[derive(Debug, Clone, Default)]
pub struct Tally(Vec<(&'static str, u64)>);

impl Tally {
    /// Adds one to `name`.
    pub fn add(&mut self, name: &'static str) {
        // The same literal is almost always the same address: then no text is compared.
        let at = self
            .0
            .iter()
            .position(|(n, _)| std::ptr::eq(*n, name))
            .or_else(|| self.0.iter().position(|(n, _)| *n == name));
        match at {
            Some(at) => self.0[at].1 += 1,
            None => self.0.push((name, 1)),
        }
    }

    /// The count of `name`, if any was added.
    pub fn get(&self, name: &str) -> Option<&u64> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, c)| c)
    }

    /// Names and counts, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + use<> {
        let mut all = self.0.clone();
        all.sort_unstable();
        all.into_iter()
    }

    /// Names and counts as a map.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        self.iter().collect()
    }
}

impl PartialEq for Tally {
    fn eq(&self, other: &Self) -> bool {
        self.to_map() == other.to_map()
    }
}

impl Eq for Tally {}

impl Serialize for Tally {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

/// One tier-progress change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressChange {
    /// When.
    pub at: Timestamp,
    /// Campaign.
    pub campaign: CampaignId,
    /// Creator.
    pub creator: CreatorId,
    /// Period.
    pub period: Period,
    /// Change in orders.
    pub orders: i64,
    /// Change in revenue.
    pub revenue: Decimal,
}

/// The offline pipeline.
#[derive(Debug)]
pub struct Engine {
    programs: ProgramHistory,
    buffer: ReorderBuffer,
    attribution: AttributionState,
    index: FastMap<ConversionKey, ConversionRecord>,
    /// Ledger books by campaign, then creator (looked up without cloning either id).
    books: hashbrown::HashMap<CampaignId, hashbrown::HashMap<CreatorId, Book, FastHash>, FastHash>,
    next_expiry: Option<Timestamp>,
    keep_outputs: bool,
    /// Buffers reused for every event: released events, attribution and ledger facts.
    released: Vec<(Event, ())>,
    facts: Vec<Fact>,
    ledger_facts: Vec<LedgerFact>,
    /// Credits emitted, in order.
    pub credits: Vec<Credit>,
    /// Ledger entries, in order.
    pub entries: Vec<LedgerEntry>,
    /// Tier-progress changes, in order.
    pub progress: Vec<ProgressChange>,
    /// KPI deltas, in order.
    pub kpis: Vec<KpiDelta>,
    /// Explanations per conversion.
    pub explanations: BTreeMap<ConversionKey, Arc<Explanation>>,
    /// Conversions no creator was credited with, in order (§5.2: still counted).
    pub unattributed: Vec<UnattributedConversion>,
    /// Counts.
    pub counts: Counts,
}

impl Engine {
    /// A pipeline for one tenant's program history.
    pub fn new(programs: ProgramHistory) -> Self {
        let grace = programs.grace();
        Self {
            programs,
            buffer: ReorderBuffer::new(grace),
            attribution: AttributionState::default(),
            index: FastMap::default(),
            books: hashbrown::HashMap::default(),
            next_expiry: None,
            keep_outputs: true,
            released: Vec::new(),
            facts: Vec::new(),
            ledger_facts: Vec::new(),
            credits: Vec::new(),
            entries: Vec::new(),
            progress: Vec::new(),
            kpis: Vec::new(),
            explanations: BTreeMap::new(),
            unattributed: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Drops credits, entries and KPI deltas instead of keeping them (benchmarks).
    #[must_use]
    pub fn without_outputs(mut self) -> Self {
        self.keep_outputs = false;
        self
    }

    /// The attribution state (for inspection).
    pub fn attribution(&self) -> &AttributionState {
        &self.attribution
    }

    /// Feeds one validated event through the reorder buffer and everything it releases.
    pub fn push(&mut self, event: Event) {
        self.counts.events += 1;
        self.counts.by_type.add(event.payload.type_name());
        let mut released = std::mem::take(&mut self.released);
        self.buffer.push(event, (), &mut released);
        self.process_all(&mut released);
        self.released = released;
    }

    /// Advances event time with no event (idle input).
    pub fn advance(&mut self, now: Timestamp) {
        let mut released = std::mem::take(&mut self.released);
        self.buffer.advance(now, &mut released);
        self.process_all(&mut released);
        self.released = released;
    }

    /// Releases everything still held (end of input).
    pub fn finish(&mut self) {
        let mut released = Vec::new();
        self.buffer.flush(&mut released);
        self.process_all(&mut released);
    }

    /// Records a payout or manual adjustment (Admin).
    pub fn ledger_input(&mut self, input: &LedgerInput) {
        self.ledger(input.key(), |book, programs, out| {
            ledger::decide_into(book, programs, input, out)
        });
    }

    fn process_all(&mut self, released: &mut Vec<(Event, ())>) {
        // Read in place and dropped together: an event is not moved out to be read.
        for (event, ()) in released.iter() {
            self.process(event);
        }
        released.clear();
    }

    fn process(&mut self, event: &Event) {
        self.expire(event.occurred_at);
        let mut facts = std::mem::take(&mut self.facts);
        attribution::decide_into(
            &self.attribution,
            &self.index,
            &self.programs,
            event,
            &mut facts,
        );
        for fact in &facts {
            attribution::apply(&mut self.attribution, fact);
            attribution::apply_index(&mut self.index, fact);
            self.observe(fact);
        }
        if let Payload::Engagement(engagement) = &event.payload
            && !matches!(facts.first(), Some(Fact::Duplicate { .. }))
        {
            let input = LedgerInput::Engagement {
                event: event.id.clone(),
                at: event.occurred_at,
                engagement: engagement.clone(),
            };
            self.ledger_input(&input);
        }
        for fact in &facts {
            if let Fact::Credited(credit) = fact {
                self.ledger(
                    (&credit.campaign, &credit.creator),
                    |book, programs, out| ledger::decide_credit_into(book, programs, credit, out),
                );
            }
        }
        if self.keep_outputs {
            self.credits
                .extend(facts.drain(..).filter_map(|fact| match fact {
                    Fact::Credited(credit) => Some(credit),
                    _ => None,
                }));
        }
        facts.clear();
        self.facts = facts;
    }

    fn expire(&mut self, at: Timestamp) {
        let due = self.next_expiry.get_or_insert(at.plus(EXPIRY_EVERY));
        if at < *due {
            return;
        }
        *due = at.plus(EXPIRY_EVERY);
        // From the time of the event being decided, not the watermark: a jump in event
        // time releases older events, whose lookback must still be remembered.
        self.attribution.expire(at.minus(self.programs.retention()));
    }

    fn observe(&mut self, fact: &Fact) {
        match fact {
            Fact::Duplicate { .. } => self.counts.duplicates += 1,
            Fact::Skipped { reason, .. } => *self.counts.skipped.entry(*reason).or_default() += 1,
            Fact::Flagged { reason, .. } => *self.counts.flagged.entry(*reason).or_default() += 1,
            Fact::Unattributed {
                key,
                explanation,
                at,
                net,
                ..
            } => {
                self.counts.unattributed += 1;
                if self.keep_outputs {
                    self.explanations.insert(key.clone(), explanation.clone());
                    self.unattributed.push(UnattributedConversion {
                        at: *at,
                        key: key.clone(),
                        net: *net,
                    });
                }
            }
            Fact::Credited(credit) => {
                self.counts.credits.add(credit.kind.name());
                if let (true, Some(explanation)) = (self.keep_outputs, &credit.explanation) {
                    let key = match &credit.kind {
                        CreditKind::Order { order, .. } => ConversionKey::Order(order.clone()),
                        CreditKind::Lead { lead, .. } => ConversionKey::Lead(lead.clone()),
                        _ => return,
                    };
                    self.explanations
                        .entry(key)
                        .or_insert_with(|| explanation.clone());
                }
            }
            _ => {}
        }
    }

    /// Decides (with `decide`) and applies one input to the book of (campaign, creator),
    /// and keeps its outputs.
    fn ledger(
        &mut self,
        (campaign, creator): (&CampaignId, &CreatorId),
        decide: impl FnOnce(&Book, &ProgramHistory, &mut Vec<LedgerFact>) -> Result<(), LedgerSkip>,
    ) {
        // One probe per level; an id is cloned only into a new entry.
        let book = self
            .books
            .entry_ref(campaign)
            .or_default()
            .entry_ref(creator)
            .or_default();
        let mut facts = std::mem::take(&mut self.ledger_facts);
        if let Err(skip) = decide(book, &self.programs, &mut facts) {
            *self
                .counts
                .ledger_skipped
                .entry(skip.to_string())
                .or_default() += 1;
            self.ledger_facts = facts;
            return;
        }
        for fact in &facts {
            ledger::apply(book, fact);
        }
        if !self.keep_outputs {
            facts.clear();
            self.ledger_facts = facts;
            return;
        }
        for fact in facts.drain(..) {
            match fact {
                LedgerFact::Entry(e) => self.entries.push(e),
                LedgerFact::Kpi(k) => self.kpis.push(k),
                LedgerFact::Progress {
                    at,
                    campaign,
                    creator,
                    period,
                    orders,
                    revenue,
                } => {
                    self.progress.push(ProgressChange {
                        at,
                        campaign,
                        creator,
                        period,
                        orders,
                        revenue,
                    });
                }
                _ => {}
            }
        }
        self.ledger_facts = facts;
    }

    /// Tier progress of every creator, campaign and period at `as_of`.
    pub fn tier_progress(&self, as_of: Timestamp) -> Vec<TierProgress> {
        let mut sums: BTreeMap<(CampaignId, CreatorId, Period), (i64, Decimal)> = BTreeMap::new();
        for p in self.progress.iter().filter(|p| p.at <= as_of) {
            let s = sums
                .entry((p.campaign.clone(), p.creator.clone(), p.period))
                .or_default();
            s.0 += p.orders;
            s.1 += p.revenue;
        }
        let program = self.programs.at(as_of).or(self.programs.versions().last());
        sums.into_iter()
            .filter_map(|((campaign, creator, period), (orders, revenue))| {
                let c = program?.campaigns.get(&campaign)?;
                Some(projection::tier_progress(
                    c, &creator, period, orders, revenue,
                ))
            })
            .collect()
    }

    /// The full report at `as_of` (entries, balances, tier progress, KPIs), in a stable
    /// order so that two runs diff clean.
    pub fn report(&self, as_of: Timestamp) -> Report {
        let statuses = projection::statuses(&self.entries, as_of);
        let mut entries: Vec<ReportEntry> = self
            .entries
            .iter()
            .filter(|e| e.occurred_at <= as_of)
            .map(|e| ReportEntry {
                status: statuses.get(&e.id).copied().unwrap_or(EntryStatus::Posted),
                entry: e.clone(),
            })
            .collect();
        entries.sort_by_key(|e| (e.entry.occurred_at, e.entry.id));
        let balances = projection::balances(&self.entries, as_of);

        let tier_progress = self.tier_progress(as_of);
        let program = self.programs.at(as_of).or(self.programs.versions().last());

        let mut kpis = BTreeMap::new();
        let campaigns: Vec<CampaignId> = program
            .map(|p| p.campaigns.keys().cloned().collect())
            .unwrap_or_default();
        for campaign in campaigns {
            let (per_creator, total) = projection::campaign_kpis(
                &self.kpis,
                &campaign,
                Timestamp(i64::MIN),
                as_of.plus(Duration(1)),
            );
            let currency = program
                .and_then(|p| p.campaigns.get(&campaign))
                .map(|c| c.currency);
            kpis.insert(
                campaign,
                CampaignReport {
                    currency,
                    total,
                    per_creator,
                },
            );
        }
        let mut unattributed = UnattributedReport::default();
        for u in self.unattributed.iter().filter(|u| u.at <= as_of) {
            match (&u.key, u.net) {
                (ConversionKey::Order(_), Some(net)) => {
                    unattributed.orders += 1;
                    *unattributed.revenue.entry(net.currency).or_default() += net.amount;
                }
                (ConversionKey::Order(_), None) => unattributed.orders += 1,
                (ConversionKey::Lead(_), _) => unattributed.leads += 1,
            }
        }
        Report {
            as_of,
            counts: self.counts.clone(),
            unattributed,
            balances,
            tier_progress,
            kpis,
            entries,
        }
    }
}

/// An entry with its status at the report's instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportEntry {
    /// Status at `as_of`.
    pub status: EntryStatus,
    /// The entry.
    #[serde(flatten)]
    pub entry: LedgerEntry,
}

/// KPIs of one campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignReport {
    /// Currency of money KPIs.
    pub currency: Option<Currency>,
    /// Totals over all creators (and unattributed conversions).
    pub total: KpiReport,
    /// Per creator.
    pub per_creator: BTreeMap<CreatorId, KpiReport>,
}

/// A conversion no creator was credited with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnattributedConversion {
    /// When.
    pub at: Timestamp,
    /// The order or lead.
    pub key: ConversionKey,
    /// Net amount (orders).
    pub net: Option<crate::money::Money>,
}

/// Conversions no creator was credited with, for the tenant's totals (they belong to no
/// campaign, so campaign KPIs cannot hold them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnattributedReport {
    /// Unattributed orders.
    pub orders: u64,
    /// Unattributed leads.
    pub leads: u64,
    /// Their net revenue per currency (refunds of unattributed orders are not deducted).
    pub revenue: BTreeMap<Currency, Decimal>,
}

/// What `payoff replay` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The instant the report describes.
    pub as_of: Timestamp,
    /// What happened to the input.
    pub counts: Counts,
    /// Conversions no creator was credited with.
    pub unattributed: UnattributedReport,
    /// Balances per creator and currency.
    pub balances: Vec<Balance>,
    /// Tier progress per campaign, creator and period.
    pub tier_progress: Vec<TierProgress>,
    /// KPIs per campaign.
    pub kpis: BTreeMap<CampaignId, CampaignReport>,
    /// Ledger entries in (time, id) order, with status.
    pub entries: Vec<ReportEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_by_name_and_reads_as_a_map_in_name_order() {
        let (mut a, mut b) = (Tally::default(), Tally::default());
        for name in ["order", "click", "click", "signup", "click"] {
            a.add(name);
        }
        // The same names from other addresses, in another order.
        let owned = ["signup".to_owned(), "click".to_owned(), "order".to_owned()];
        let leaked: Vec<&'static str> = owned
            .iter()
            .map(|n| &*Box::leak(n.clone().into_boxed_str()))
            .collect();
        for name in [leaked[1], leaked[0], leaked[1], leaked[2], leaked[1]] {
            b.add(name);
        }
        assert_eq!(a.get("click"), Some(&3));
        assert_eq!(a.get("lead"), None);
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [("click", 3), ("order", 1), ("signup", 1)]
        );
        assert_eq!(a, b, "equal whatever the names' addresses and order");
        assert_eq!(b.0.len(), 3, "one entry per name");
        b.add("lead");
        assert_ne!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"click":3,"order":1,"signup":1}"#
        );
    }
}
