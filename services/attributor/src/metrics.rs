//! Metric names of the attributor, with their help texts. Labels are bounded: event
//! type, result, credit kind, reason, input and partition number; never ids.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Input records by `type` and `result`.
pub const RECORDS: &str = "payoff_attributor_records_total";
/// Credits emitted by `kind`.
pub const CREDITS: &str = "payoff_attributor_credits_total";
/// Records sent to the dead-letter topic by `reason`.
pub const DEAD_LETTERS: &str = "payoff_attributor_dead_letters_total";
/// Every `reason` label of [`DEAD_LETTERS`] (the codec's reasons and unknown conversions).
pub const DEAD_LETTER_REASONS: &[&str] = &[
    "empty",
    "undecodable",
    "no_tenant",
    "invalid",
    "unknown_conversion",
];
/// Event time of a credit to the commit of its transaction.
pub const ATTRIBUTION_LATENCY: &str = "payoff_attributor_attribution_latency_seconds";
/// Duration of sending offsets and committing a transaction.
pub const COMMIT_DURATION: &str = "payoff_attributor_commit_duration_seconds";
/// Transactions committed.
pub const COMMITS: &str = "payoff_attributor_transactions_total";
/// Transactions aborted.
pub const ABORTS: &str = "payoff_attributor_transaction_aborts_total";
/// Records behind the end of each input partition, by `topic` and `partition`.
pub const LAG: &str = "payoff_attributor_consumer_lag_records";
/// Visitors remembered.
pub const STATE_VISITORS: &str = "payoff_attributor_state_visitors";
/// Size of the state as its changelog encodes it.
pub const STATE_BYTES: &str = "payoff_attributor_state_bytes";
/// Time to restore a task's state from its changelog.
pub const RESTORE_DURATION: &str = "payoff_attributor_restore_duration_seconds";
/// Changelog records read while restoring.
pub const RESTORED: &str = "payoff_attributor_restored_records_total";
/// Partition numbers (tasks) owned by this instance.
pub const TASKS: &str = "payoff_attributor_tasks";
/// 1 when state is restored and records are being processed, else 0.
pub const READY: &str = "payoff_attributor_ready_ratio";

/// Registers help texts (so `promtool check metrics` passes).
pub fn describe() {
    describe_counter!(
        RECORDS,
        Unit::Count,
        "Input records, by event type and result (credited, unattributed, duplicate, skipped, flagged, waiting, dead_lettered, indexed)."
    );
    describe_counter!(
        CREDITS,
        Unit::Count,
        "Credits committed to the credits topic, by kind."
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Records sent to the dead-letter topic, by reason."
    );
    describe_histogram!(
        ATTRIBUTION_LATENCY,
        Unit::Seconds,
        "From a credit's event time to the commit of the transaction that emitted it."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Sending offsets to and committing one Kafka transaction."
    );
    describe_counter!(COMMITS, Unit::Count, "Kafka transactions committed.");
    describe_counter!(ABORTS, Unit::Count, "Kafka transactions aborted.");
    // Counters that count failures start at 0: a series that first appears at 1 gives
    // `increase()` nothing, so the first abort or dead letter would raise no alert.
    metrics::counter!(ABORTS).increment(0);
    for reason in DEAD_LETTER_REASONS {
        metrics::counter!(DEAD_LETTERS, "reason" => *reason).increment(0);
    }
    describe_gauge!(
        LAG,
        Unit::Count,
        "Records behind the end of each input partition, by topic and partition."
    );
    describe_gauge!(STATE_VISITORS, Unit::Count, "Visitors remembered.");
    describe_gauge!(
        STATE_BYTES,
        Unit::Bytes,
        "Size of the attribution state as its changelog encodes it."
    );
    describe_histogram!(
        RESTORE_DURATION,
        Unit::Seconds,
        "Time to restore one task's state from its changelog partition."
    );
    describe_counter!(
        RESTORED,
        Unit::Count,
        "Changelog records read while restoring state."
    );
    describe_gauge!(
        TASKS,
        Unit::Count,
        "Partition numbers owned by this instance."
    );
    describe_gauge!(
        READY,
        "1 when state is restored and records are being processed, else 0."
    );
}
