//! The attributor's configuration: one typed struct from flags and environment,
//! validated at startup with every problem reported.

use std::{net::SocketAddr, time::Duration};

/// Log format flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
}

/// payoff-attributor: consumes clicks, signups, orders, adjustments and lead status from
/// Kafka, decides which creators earned each conversion (SPEC §5) and emits credits,
/// exactly once: credits, state changelog and consumed offsets are committed in one Kafka
/// transaction.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// Kafka bootstrap servers (required).
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS", default_value = "")]
    pub kafka_brokers: String,
    /// Prefix of every topic name.
    #[arg(long, env = "PAYOFF_TOPIC_PREFIX", default_value = "payoff.")]
    pub topic_prefix: String,
    /// Consumer group shared by every attributor instance.
    #[arg(
        long,
        env = "PAYOFF_ATTRIBUTOR_GROUP",
        default_value = "payoff-attributor"
    )]
    pub group_id: String,
    /// This instance's stable name (the pod name): its transactional id, so that a
    /// restarted instance fences its predecessor's open transaction at once.
    #[arg(long, env = "PAYOFF_INSTANCE_ID", default_value = "attributor-0")]
    pub instance_id: String,
    /// gRPC health listen address (`grpc.health.v1`; serving once state is restored).
    #[arg(
        long,
        env = "PAYOFF_ATTRIBUTOR_LISTEN",
        default_value = "0.0.0.0:50052"
    )]
    pub listen: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(
        long,
        env = "PAYOFF_ATTRIBUTOR_METRICS_LISTEN",
        default_value = "0.0.0.0:9465"
    )]
    pub metrics_listen: SocketAddr,
    /// Most input records per transaction.
    #[arg(
        long,
        env = "PAYOFF_ATTRIBUTOR_BATCH_RECORDS",
        default_value_t = 20_000
    )]
    pub batch_records: usize,
    /// Longest time a transaction stays open (the latency the commit adds).
    #[arg(long, env = "PAYOFF_ATTRIBUTOR_BATCH_INTERVAL", value_parser = humantime_duration, default_value = "100ms")]
    pub batch_interval: Duration,
    /// Kafka transaction timeout: how long a crashed instance's open transaction can
    /// hold back read_committed consumers.
    #[arg(long, env = "PAYOFF_ATTRIBUTOR_TRANSACTION_TIMEOUT", value_parser = humantime_duration, default_value = "15s")]
    pub transaction_timeout: Duration,
    /// Consumer group session timeout: how long an instance that stopped answering keeps
    /// its partitions before they move (it is fenced from then on).
    #[arg(long, env = "PAYOFF_ATTRIBUTOR_SESSION_TIMEOUT", value_parser = humantime_duration, default_value = "45s")]
    pub session_timeout: Duration,
    /// How long (event time) a refund or lead status waits for its conversion to be
    /// attributed before it goes to the dead-letter topic.
    #[arg(long, env = "PAYOFF_ATTRIBUTOR_CORRECTION_WAIT", value_parser = humantime_duration, default_value = "24h")]
    pub correction_wait: Duration,
    /// The least wall-clock time a refund or lead status waits for its conversion too (so
    /// that a backlog, where the attributing task may lag far behind in event time, does
    /// not send valid corrections to the dead letters).
    #[arg(long, env = "PAYOFF_ATTRIBUTOR_CORRECTION_WALL_WAIT", value_parser = humantime_duration, default_value = "1h")]
    pub correction_wall_wait: Duration,
    /// How long (wall clock, after the newest input record) a partition whose inputs are
    /// all read to their end must stay quiet before its reorder buffer releases what it
    /// holds, as the end of input does in replay; never less than the tenant's grace
    /// period. A click that arrives after that, within the grace of a released
    /// conversion's time, counts as late. Long values keep a quiet stream's tail until its
    /// next event.
    #[arg(long, env = "PAYOFF_ATTRIBUTOR_QUIET_RELEASE", value_parser = humantime_duration, default_value = "0s")]
    pub quiet_release: Duration,
    /// How long (wall clock) the event-time merge waits for an input that is empty but
    /// not known to be at its end before going on without it.
    #[arg(long, env = "PAYOFF_ATTRIBUTOR_MAX_IDLE", value_parser = humantime_duration, default_value = "2s")]
    pub max_idle: Duration,
    /// Most events a task holds decoded for the event-time merge. Each input may hold a
    /// seventh of it: an input read ahead of the others (in a backlog, the sparse topics
    /// are fetched long before the clicks of the same hours) is not read further until
    /// the merge has used some, so memory stays bounded and the merge never has to go on
    /// without an input because too much is held.
    #[arg(
        long,
        env = "PAYOFF_ATTRIBUTOR_MAX_HELD_EVENTS",
        default_value_t = 200_000
    )]
    pub max_held_events: usize,
    /// Threads the tasks (one per input partition owned) run on; 0: one per CPU.
    #[arg(long, env = "PAYOFF_ATTRIBUTOR_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Time allowed for finishing the open transaction and leaving the group on shutdown.
    #[arg(long, env = "PAYOFF_DRAIN_TIMEOUT", value_parser = humantime_duration, default_value = "20s")]
    pub drain_timeout: Duration,
    /// Log format.
    #[arg(long, env = "PAYOFF_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax; RUST_LOG wins).
    #[arg(long, env = "PAYOFF_LOG", default_value = "info")]
    pub log: String,
}

pub use payoff_runtime::humantime_duration;

use crate::task::HELD_SHARES;

impl Config {
    /// Every problem with this configuration (empty when it is usable).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.kafka_brokers.trim().is_empty() {
            p.push("--kafka-brokers (PAYOFF_KAFKA_BROKERS) is required".to_owned());
        }
        if self.group_id.is_empty() || self.instance_id.is_empty() {
            p.push("--group-id and --instance-id must not be empty".to_owned());
        }
        if self.batch_records == 0 {
            p.push("--batch-records must be positive".to_owned());
        }
        if self.batch_interval.is_zero() || self.batch_interval >= self.transaction_timeout {
            p.push(
                "--batch-interval must be positive and shorter than --transaction-timeout"
                    .to_owned(),
            );
        }
        if self.drain_timeout <= self.batch_interval {
            p.push("--drain-timeout must be longer than --batch-interval".to_owned());
        }
        if self.session_timeout < Duration::from_secs(1) {
            p.push("--session-timeout must be at least 1s".to_owned());
        }
        if self.max_held_events < HELD_SHARES {
            p.push(format!(
                "--max-held-events must be at least {HELD_SHARES} (one event per input)"
            ));
        }
        if self.correction_wait.is_zero() {
            p.push("--correction-wait must be positive".to_owned());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Config;

    fn config(args: &[&str]) -> Config {
        let base = ["payoff-attributor", "--kafka-brokers", "127.0.0.1:9092"];
        Config::try_parse_from(base.iter().chain(args)).expect("parses")
    }

    #[test]
    fn the_defaults_are_usable() {
        assert_eq!(config(&[]).problems(), Vec::<String>::new());
    }

    #[test]
    fn a_hold_limit_below_one_event_per_input_is_refused() {
        let problems = config(&["--max-held-events", "6"]).problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("--max-held-events"), "{problems:?}");
        assert!(config(&["--max-held-events", "7"]).problems().is_empty());
    }
}
