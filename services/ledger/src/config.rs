//! The ledger's configuration: one typed struct from flags and environment, validated at
//! startup with every problem reported.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Log format flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
}

/// Store consistency flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// QUORUM.
    Quorum,
    /// LOCAL_QUORUM.
    LocalQuorum,
}

/// payoff-ledger: folds the `credits` topic into the append-only commission ledger and
/// its projections in ScyllaDB / Cassandra (SPEC §6-§9), and answers the `Ledger` gRPC
/// queries: balances, entries, tier progress, KPIs, explanations and a live watch.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// Kafka bootstrap servers (required).
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS", default_value = "")]
    pub kafka_brokers: String,
    /// CQL contact points, comma-separated host:port (required).
    #[arg(long, env = "PAYOFF_SCYLLA_NODES", default_value = "")]
    pub scylla_nodes: String,
    /// Keyspace (created and migrated by `payoff migrate`).
    #[arg(long, env = "PAYOFF_KEYSPACE", default_value = "payoff")]
    pub keyspace: String,
    /// Consistency of every store read and write.
    #[arg(long, env = "PAYOFF_CONSISTENCY", value_enum, default_value = "quorum")]
    pub consistency: Consistency,
    /// Prefix of every topic name.
    #[arg(long, env = "PAYOFF_TOPIC_PREFIX", default_value = "payoff.")]
    pub topic_prefix: String,
    /// Consumer group shared by every ledger instance.
    #[arg(long, env = "PAYOFF_LEDGER_GROUP", default_value = "payoff-ledger")]
    pub group_id: String,
    /// gRPC listen address (`payoff.v1.Ledger`, `grpc.health.v1`, reflection).
    #[arg(long, env = "PAYOFF_LEDGER_LISTEN", default_value = "0.0.0.0:50053")]
    pub listen: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(
        long,
        env = "PAYOFF_LEDGER_METRICS_LISTEN",
        default_value = "0.0.0.0:9466"
    )]
    pub metrics_listen: SocketAddr,
    /// API keys file (JSON of SHA-256 hashes, reloaded when it changes; see
    /// payoff-runtime's `auth`). Queries need a `read` or `creator` key.
    #[arg(long, env = "PAYOFF_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// TLS certificate (PEM) for the gRPC listener; with --tls-key.
    #[arg(long, env = "PAYOFF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "PAYOFF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Longest time folded credits wait before they are written (freshness vs. batch
    /// size).
    #[arg(long, env = "PAYOFF_LEDGER_BATCH_INTERVAL", value_parser = humantime_duration, default_value = "20ms")]
    pub batch_interval: Duration,
    /// Ledger entries kept in memory for queries (entries of recently asked creators and
    /// campaigns; each read checks a small marks row to see whether they changed); 0 turns
    /// the cache off.
    #[arg(
        long,
        env = "PAYOFF_LEDGER_QUERY_CACHE_ENTRIES",
        default_value_t = 1_000_000
    )]
    pub query_cache_entries: u64,
    /// Consumer group session timeout.
    #[arg(long, env = "PAYOFF_LEDGER_SESSION_TIMEOUT", value_parser = humantime_duration, default_value = "30s")]
    pub session_timeout: Duration,
    /// Time allowed for writing what is folded and leaving the group on shutdown.
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

impl Config {
    /// Every problem with this configuration (empty when it is usable).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.kafka_brokers.trim().is_empty() {
            p.push("--kafka-brokers (PAYOFF_KAFKA_BROKERS) is required".to_owned());
        }
        if self.scylla_nodes.trim().is_empty() {
            p.push("--scylla-nodes (PAYOFF_SCYLLA_NODES) is required".to_owned());
        }
        if payoff_adapters::cql::validate_identifier(&self.keyspace).is_err() {
            p.push(format!(
                "--keyspace {:?} is not a CQL identifier",
                self.keyspace
            ));
        }
        if self.group_id.is_empty() {
            p.push("--group-id must not be empty".to_owned());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            p.push("--tls-cert and --tls-key go together".to_owned());
        }
        if self.batch_interval.is_zero() {
            p.push("--batch-interval must be positive".to_owned());
        }
        if self.drain_timeout <= self.batch_interval {
            p.push("--drain-timeout must be longer than --batch-interval".to_owned());
        }
        p
    }
}
