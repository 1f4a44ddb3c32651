//! The fold of one `credits` partition, with no IO: credits are held in event-time order
//! until every attributor task has passed them (its progress markers, see
//! `payoff_adapters::progress`), then folded through the core's ledger `decide`/`apply`,
//! one book per (tenant, campaign, creator).
//!
//! Why hold them: one book's credits come from every attributor task, interleaved in the
//! partition by how fast each task ran, and the fold depends on order (a tier rate is
//! chosen by the order's ordinal in its period, caps are first come, a milestone is
//! crossed by one order). Released in the order of their cause, `(event time, event
//! type, event id)` as the offline replay decides them, the ledger is the same whatever
//! the interleaving, restarts and rebalances upstream.
//!
//! A credit behind what has already been released (its cause arrived later than the
//! grace period) is folded when it arrives, as the replay folds a late event when it
//! arrives.

use std::collections::{BTreeMap, HashMap};

use payoff_adapters::progress::Progress;
use payoff_core::{
    credit::{Credit, CreditKind},
    ids::{CampaignId, CreatorId, DerivedId, EventId, TenantId},
    ledger::{self, Book, LedgerFact},
    program::{Program, ProgramHistory},
    time::Timestamp,
};

/// Every tenant's program history, from the `programs` topic.
#[derive(Debug, Clone, Default)]
pub struct Programs {
    tenants: HashMap<TenantId, ProgramHistory>,
}

impl Programs {
    /// Adds a version of a tenant's program.
    pub fn insert(&mut self, tenant: TenantId, program: Program) {
        self.tenants.entry(tenant).or_default().insert(program);
    }

    /// A tenant's history, if it has one.
    pub fn get(&self, tenant: &TenantId) -> Option<&ProgramHistory> {
        self.tenants.get(tenant)
    }

    /// Number of tenants with a program.
    pub fn tenants(&self) -> usize {
        self.tenants.len()
    }
}

/// The order credits are folded in: their cause's event time, type rank (as the replay's
/// reorder buffer orders events) and id, then the credit id.
type Key = (Timestamp, u8, EventId, DerivedId);

fn key_of(credit: &Credit) -> Key {
    let rank = match credit.kind {
        CreditKind::Click { .. } => 0,
        CreditKind::Lead { .. } => 2,
        CreditKind::Order { .. } => 3,
        CreditKind::LeadStatus { .. } => 4,
        CreditKind::Reversal { .. } => 5,
    };
    (credit.occurred_at, rank, credit.cause.clone(), credit.id)
}

/// One credit folded, with what it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// Position in this partition's fold (0, 1, 2, ...): the same on every replay of the
    /// partition, so a restart knows which outputs are already stored.
    pub seq: u64,
    /// The tenant.
    pub tenant: TenantId,
    /// The credit.
    pub credit: Credit,
    /// What it changed (empty when skipped).
    pub facts: Vec<LedgerFact>,
    /// Why it changed nothing, when the ledger could not use it.
    pub skipped: Option<String>,
    /// Folded on arrival, behind credits already released.
    pub late: bool,
}

/// What the fold keeps of one tenant.
#[derive(Debug, Default)]
struct TenantFold {
    /// Progress of each attributor task; all must be known to release anything.
    marks: Vec<Option<Timestamp>>,
    held: BTreeMap<Key, Credit>,
    /// The last key released.
    released: Option<Key>,
    books: HashMap<(CampaignId, CreatorId), Book>,
}

impl TenantFold {
    /// The event time before which every task has emitted all its credits.
    fn safe_before(&self) -> Option<Timestamp> {
        if self.marks.is_empty() {
            return None;
        }
        self.marks
            .iter()
            .try_fold(Timestamp(i64::MAX), |min, m| m.map(|m| min.min(m)))
    }
}

/// The fold of one `credits` partition.
#[derive(Debug, Default)]
pub struct Fold {
    tenants: BTreeMap<TenantId, TenantFold>,
    seq: u64,
}

impl Fold {
    /// An empty fold.
    pub fn new() -> Self {
        Self::default()
    }

    /// Credits folded so far.
    pub fn folded(&self) -> u64 {
        self.seq
    }

    /// Credits held, waiting for the attributor tasks' progress.
    pub fn held(&self) -> usize {
        self.tenants.values().map(|t| t.held.len()).sum()
    }

    /// Books (tenant, campaign, creator) with state.
    pub fn books(&self) -> usize {
        self.tenants.values().map(|t| t.books.len()).sum()
    }

    /// Takes a credit; appends what it releases to `out`.
    pub fn credit(
        &mut self,
        programs: &Programs,
        tenant: TenantId,
        credit: Credit,
        out: &mut Vec<Folded>,
    ) {
        let key = key_of(&credit);
        let state = self.tenants.entry(tenant.clone()).or_default();
        if state.released.as_ref().is_some_and(|r| key <= *r) {
            fold_one(programs, &tenant, state, &mut self.seq, credit, true, out);
            return;
        }
        state.held.insert(key, credit);
        self.release(programs, &tenant, out);
    }

    /// Takes a progress marker; appends what it releases to `out`.
    pub fn progress(&mut self, programs: &Programs, marker: &Progress, out: &mut Vec<Folded>) {
        let Ok(tenant) = TenantId::parse("tenant", &marker.tenant) else {
            return;
        };
        let state = self.tenants.entry(tenant.clone()).or_default();
        let sources = usize::try_from(marker.sources).unwrap_or_default();
        if state.marks.len() != sources {
            state.marks.resize(sources, None);
        }
        let source = usize::try_from(marker.source).unwrap_or(usize::MAX);
        if let Some(mark) = state.marks.get_mut(source) {
            // A restarted task may report less than it did before its crash: its
            // earlier marker still holds (what it emitted then is committed).
            if mark.is_none_or(|m| marker.before() > m) {
                *mark = Some(marker.before());
            }
        }
        self.release(programs, &tenant, out);
    }

    fn release(&mut self, programs: &Programs, tenant: &TenantId, out: &mut Vec<Folded>) {
        let Some(state) = self.tenants.get_mut(tenant) else {
            return;
        };
        let Some(before) = state.safe_before() else {
            return;
        };
        while let Some(entry) = state.held.first_entry() {
            if entry.key().0 >= before {
                break;
            }
            let (key, credit) = entry.remove_entry();
            state.released = Some(key);
            fold_one(programs, tenant, state, &mut self.seq, credit, false, out);
        }
    }
}

fn fold_one(
    programs: &Programs,
    tenant: &TenantId,
    state: &mut TenantFold,
    seq: &mut u64,
    credit: Credit,
    late: bool,
    out: &mut Vec<Folded>,
) {
    let empty = ProgramHistory::default();
    let history = programs.get(tenant).unwrap_or(&empty);
    let book = state
        .books
        .entry((credit.campaign.clone(), credit.creator.clone()))
        .or_default();
    let mut facts = Vec::new();
    let skipped = match ledger::decide_credit_into(book, history, &credit, &mut facts) {
        Ok(()) => {
            for fact in &facts {
                ledger::apply(book, fact);
            }
            None
        }
        Err(skip) => Some(skip.to_string()),
    };
    out.push(Folded {
        seq: *seq,
        tenant: tenant.clone(),
        credit,
        facts,
        skipped,
        late,
    });
    *seq += 1;
}
