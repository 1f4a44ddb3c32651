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
    ids::{CampaignId, CreatorId, TenantId},
    ledger::{self, Book, LedgerFact, LedgerInput},
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

/// The order inputs are folded in: their cause's event time, type rank (as the replay's
/// reorder buffer orders events; payouts and manual adjustments after events of the same
/// instant) and id, then the credit id.
type Key = (Timestamp, u8, String, String);

/// What the fold takes: a credit from the attributor, or a payout or manual adjustment
/// recorded through `Admin`.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A credit.
    Credit(Credit),
    /// A payout or manual adjustment ([`LedgerInput::Payout`], [`LedgerInput::Manual`]).
    Record(LedgerInput),
}

impl Input {
    /// The credit, if it is one.
    pub fn credit(&self) -> Option<&Credit> {
        match self {
            Self::Credit(c) => Some(c),
            Self::Record(LedgerInput::Credit(c)) => Some(c),
            Self::Record(_) => None,
        }
    }

    /// Event time.
    pub fn at(&self) -> Timestamp {
        match self {
            Self::Credit(c) => c.occurred_at,
            Self::Record(r) => r.at(),
        }
    }

    /// What caused it, as text (the credit id, or the record id): row keys derive from it.
    pub fn cause(&self) -> String {
        match self {
            Self::Credit(c) => c.id.to_text(),
            Self::Record(LedgerInput::Payout { id, .. } | LedgerInput::Manual { id, .. }) => {
                id.as_str().to_owned()
            }
            Self::Record(LedgerInput::Credit(c)) => c.id.to_text(),
            Self::Record(LedgerInput::Engagement { event, .. }) => event.as_str().to_owned(),
        }
    }

    /// A bounded name of its kind (a metric label).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Credit(c) | Self::Record(LedgerInput::Credit(c)) => c.kind.name(),
            Self::Record(LedgerInput::Payout { .. }) => "payout",
            Self::Record(LedgerInput::Manual { .. }) => "manual_adjustment",
            Self::Record(LedgerInput::Engagement { .. }) => "engagement",
        }
    }

    fn key(&self) -> Key {
        match self {
            Self::Credit(credit) | Self::Record(LedgerInput::Credit(credit)) => {
                let rank = match credit.kind {
                    CreditKind::Click { .. } => 0,
                    CreditKind::Lead { .. } => 2,
                    CreditKind::Order { .. } => 3,
                    CreditKind::LeadStatus { .. } => 4,
                    CreditKind::Reversal { .. } => 5,
                };
                (
                    credit.occurred_at,
                    rank,
                    credit.cause.as_str().to_owned(),
                    credit.id.to_text(),
                )
            }
            Self::Record(r) => (r.at(), 6, self.cause(), String::new()),
        }
    }

    fn book(&self) -> (CampaignId, CreatorId) {
        let (campaign, creator) = match self {
            Self::Credit(c) => (&c.campaign, &c.creator),
            Self::Record(r) => r.key(),
        };
        (campaign.clone(), creator.clone())
    }
}

/// One credit folded, with what it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// Position in this partition's fold (0, 1, 2, ...): the same on every replay of the
    /// partition, so a restart knows which outputs are already stored.
    pub seq: u64,
    /// The tenant.
    pub tenant: TenantId,
    /// The credit, payout or manual adjustment.
    pub input: Input,
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
    held: BTreeMap<Key, Input>,
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
        self.input(programs, tenant, Input::Credit(credit), out);
    }

    /// Takes any input (held like a credit, until every task has passed its time);
    /// appends what it releases to `out`.
    pub fn input(
        &mut self,
        programs: &Programs,
        tenant: TenantId,
        input: Input,
        out: &mut Vec<Folded>,
    ) {
        let key = input.key();
        let state = self.tenants.entry(tenant.clone()).or_default();
        if state.released.as_ref().is_some_and(|r| key <= *r) {
            fold_one(programs, &tenant, state, &mut self.seq, input, true, out);
            return;
        }
        state.held.insert(key, input);
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
            let (key, input) = entry.remove_entry();
            state.released = Some(key);
            fold_one(programs, tenant, state, &mut self.seq, input, false, out);
        }
    }
}

fn fold_one(
    programs: &Programs,
    tenant: &TenantId,
    state: &mut TenantFold,
    seq: &mut u64,
    input: Input,
    late: bool,
    out: &mut Vec<Folded>,
) {
    let empty = ProgramHistory::default();
    let history = programs.get(tenant).unwrap_or(&empty);
    let book = state.books.entry(input.book()).or_default();
    let mut facts = Vec::new();
    let decided = match &input {
        Input::Credit(credit) => ledger::decide_credit_into(book, history, credit, &mut facts),
        Input::Record(record) => ledger::decide_into(book, history, record, &mut facts),
    };
    let skipped = match decided {
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
        input,
        facts,
        skipped,
        late,
    });
    *seq += 1;
}
