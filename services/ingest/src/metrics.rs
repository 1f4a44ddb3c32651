//! Metric names of the ingest service, with their help texts. Labels are bounded: event
//! type, result, rule name, gRPC method and code; never ids.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Events by `type` and `result` (accepted, duplicate, rejected).
pub const EVENTS: &str = "payoff_ingest_events_total";
/// Rejected events by `reason` (the broken rule).
pub const REJECTIONS: &str = "payoff_ingest_rejections_total";
/// Requests by `method` and gRPC `code`.
pub const REQUESTS: &str = "payoff_ingest_requests_total";
/// Request latency by `method`.
pub const REQUEST_DURATION: &str = "payoff_ingest_request_duration_seconds";
/// Time from handing a record to the producer to Kafka's acknowledgement.
pub const PRODUCE_DURATION: &str = "payoff_ingest_produce_duration_seconds";
/// Events per batch or stream call.
pub const BATCH_SIZE: &str = "payoff_ingest_batch_size_events";
/// Events being validated or produced right now.
pub const IN_FLIGHT: &str = "payoff_ingest_in_flight_events";
/// 1 when the producer reaches Kafka, else 0.
pub const KAFKA_UP: &str = "payoff_ingest_kafka_up_ratio";

/// Registers help texts (so `promtool check metrics` passes).
pub fn describe() {
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Events received, by type and result (accepted, duplicate, rejected)."
    );
    describe_counter!(
        REJECTIONS,
        Unit::Count,
        "Rejected events, by the rule they broke."
    );
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "gRPC requests, by method and status code."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "gRPC request latency, by method."
    );
    describe_histogram!(
        PRODUCE_DURATION,
        Unit::Seconds,
        "Latency from producing a record to Kafka's acknowledgement."
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Events per batch or stream request."
    );
    describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Events being validated or produced."
    );
    describe_gauge!(KAFKA_UP, "1 when the producer reaches Kafka, else 0.");
}
