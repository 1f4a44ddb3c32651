//! Metric names (`payoff_ledger_*`) and their help texts.

/// Credits folded, by kind and result (`folded`, `skipped`, `late`).
pub const CREDITS: &str = "payoff_ledger_credits_total";
/// Ledger entries written, by kind.
pub const ENTRIES: &str = "payoff_ledger_entries_total";
/// Commission (signed entry amounts) booked, by currency (a counter of money, so Grafana
/// charts it live; payouts excluded).
pub const COMMISSION: &str = "payoff_ledger_commission_total";
/// Credited revenue, by tenant and currency.
pub const REVENUE: &str = "payoff_ledger_revenue_total";
/// A campaign's all-time KPI counters (§9), by tenant and campaign: gauges that each
/// instance sets from its folds, so `sum by (campaign)` over instances is the whole, and
/// refunds lower them. Money in the campaign's currency.
pub const CAMPAIGN_CLICKS: &str = "payoff_ledger_campaign_clicks";
/// Credited orders net of full refunds (fractions under split models).
pub const CAMPAIGN_ORDERS: &str = "payoff_ledger_campaign_orders";
/// Credited leads.
pub const CAMPAIGN_LEADS: &str = "payoff_ledger_campaign_leads";
/// Credited revenue net of refunds.
pub const CAMPAIGN_REVENUE: &str = "payoff_ledger_campaign_revenue";
/// Cost: commission, bonuses, base fees and adjustments, net of reversals.
pub const CAMPAIGN_COST: &str = "payoff_ledger_campaign_cost";
/// The creators with the most net commission per tenant and currency, in currency units:
/// only each instance's top [`TOP_CREATORS`] carry a value (the others read 0), so the
/// `creator` label stays bounded.
pub const TOP_CREATOR_COMMISSION: &str = "payoff_ledger_top_creator_commission";
/// How many creators per tenant and currency [`TOP_CREATOR_COMMISSION`] exports.
pub const TOP_CREATORS: usize = 10;
/// Credits held, waiting for every attributor task's progress.
pub const HELD: &str = "payoff_ledger_held_credits";
/// Time to write one batch to the store.
pub const WRITE_DURATION: &str = "payoff_ledger_write_duration_seconds";
/// From a credit's event time to its rows being stored (for order credits: freshness).
pub const FRESHNESS: &str = "payoff_ledger_freshness_seconds";
/// Query latency, by method.
pub const QUERY_DURATION: &str = "payoff_ledger_query_duration_seconds";
/// Entry reads of creators and campaigns by the query cache's answer (`hit`, `miss`).
pub const QUERY_CACHE: &str = "payoff_ledger_query_cache_total";
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
        "Commission in hundredths (accruals, bonuses, base fees), by tenant, currency and direction (earned, reversed)."
    );
    describe_counter!(
        REVENUE,
        Unit::Count,
        "Credited revenue in hundredths, by tenant and currency."
    );
    describe_gauge!(
        CAMPAIGN_CLICKS,
        "Unique unflagged clicks of a campaign, all time, as folded by this instance."
    );
    describe_gauge!(
        CAMPAIGN_ORDERS,
        "Credited orders of a campaign net of full refunds, all time, as folded by this instance."
    );
    describe_gauge!(
        CAMPAIGN_LEADS,
        "Credited leads of a campaign, all time, as folded by this instance."
    );
    describe_gauge!(
        CAMPAIGN_REVENUE,
        "Credited revenue of a campaign net of refunds, in its currency, all time, as folded by this instance."
    );
    describe_gauge!(
        CAMPAIGN_COST,
        "Cost of a campaign (commission, bonuses, base fees, adjustments, net of reversals), in its currency, all time, as folded by this instance."
    );
    describe_gauge!(
        TOP_CREATOR_COMMISSION,
        "Net commission of this instance's top creators per tenant and currency, in currency units (creators that left the top read 0)."
    );
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
    describe_counter!(
        QUERY_CACHE,
        "Entry reads of a creator or campaign by query cache result (hit: marks unchanged)."
    );
    for result in ["hit", "miss"] {
        metrics::counter!(QUERY_CACHE, "result" => result).increment(0);
    }
    describe_gauge!(WATCHERS, "Open Ledger.Watch streams.");
    // Exists (at 0) before the first stream opens; `increment` leaves a count alone.
    metrics::gauge!(WATCHERS).increment(0.0);
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
