//! Metric names (`payoff_ledger_*`) and their help texts.

/// Credits folded, by kind and result (`folded`, `skipped`, `late`).
pub const CREDITS: &str = "payoff_ledger_credits_total";
/// Ledger entries written, by kind.
pub const ENTRIES: &str = "payoff_ledger_entries_total";
/// Commission (signed entry amounts) booked, by currency (a counter of money, so Grafana
/// charts it live; payouts excluded).
pub const COMMISSION: &str = "payoff_ledger_commission_total";
/// Credited revenue, by currency.
pub const REVENUE: &str = "payoff_ledger_revenue_total";
/// Credits held, waiting for every attributor task's progress.
pub const HELD: &str = "payoff_ledger_held_credits";
/// Time to write one batch to the store.
pub const WRITE_DURATION: &str = "payoff_ledger_write_duration_seconds";
/// From a credit's event time to its rows being stored (for order credits: freshness).
pub const FRESHNESS: &str = "payoff_ledger_freshness_seconds";
/// Query latency, by method.
pub const QUERY_DURATION: &str = "payoff_ledger_query_duration_seconds";
/// Queries that failed, by method and code.
pub const QUERY_ERRORS: &str = "payoff_ledger_query_errors_total";
/// Open watch streams.
pub const WATCHERS: &str = "payoff_ledger_watch_subscribers";
/// Time to re-fold a partition to where the store is, after an assignment.
pub const RESTORE_DURATION: &str = "payoff_ledger_restore_duration_seconds";
/// 1 once programs are loaded and the store answers.
pub const READY: &str = "payoff_ledger_ready";

/// Registers every help text (call after the recorder exists).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        CREDITS,
        "Credits folded into the ledger, by kind and result."
    );
    describe_counter!(ENTRIES, "Ledger entries written, by kind.");
    describe_counter!(
        COMMISSION,
        Unit::Count,
        "Commission booked (accruals, bonuses, base fees, net of reversals), by currency."
    );
    describe_counter!(REVENUE, Unit::Count, "Credited revenue, by currency.");
    describe_gauge!(
        HELD,
        "Credits held until every attributor task has passed their event time."
    );
    describe_histogram!(
        WRITE_DURATION,
        Unit::Seconds,
        "Time to write one batch of ledger rows to the store."
    );
    describe_histogram!(
        FRESHNESS,
        Unit::Seconds,
        "From a credit's event time to its ledger rows being stored."
    );
    describe_histogram!(
        QUERY_DURATION,
        Unit::Seconds,
        "Ledger query latency, by method."
    );
    describe_counter!(
        QUERY_ERRORS,
        "Ledger queries that failed, by method and code."
    );
    describe_gauge!(WATCHERS, "Open Ledger.Watch streams.");
    describe_histogram!(
        RESTORE_DURATION,
        Unit::Seconds,
        "Time to re-fold a partition up to what the store holds."
    );
    describe_gauge!(
        READY,
        "1 when the ledger is ready (programs loaded, store reachable)."
    );
}
