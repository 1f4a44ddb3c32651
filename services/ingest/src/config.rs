//! The ingest service's configuration: one typed struct from flags and environment,
//! validated at startup with every problem reported.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Log format flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
}

/// payoff-ingest: receives click, signup, order, adjustment, lead-status and engagement
/// events over gRPC, validates them, hashes PII, and publishes each accepted event to
/// Kafka before acknowledging it.
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// gRPC listen address.
    #[arg(long, env = "PAYOFF_INGEST_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(
        long,
        env = "PAYOFF_INGEST_METRICS_LISTEN",
        default_value = "0.0.0.0:9464"
    )]
    pub metrics_listen: SocketAddr,
    /// Kafka bootstrap servers. Empty: keep events in memory (development only: nothing
    /// is durable).
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS", default_value = "")]
    pub kafka_brokers: String,
    /// Prefix of every topic name.
    #[arg(long, env = "PAYOFF_TOPIC_PREFIX", default_value = "payoff.")]
    pub topic_prefix: String,
    /// API key file (JSON, secrets stored as SHA-256); re-read when it changes.
    #[arg(long, env = "PAYOFF_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// Secret from which each tenant's PII salt is derived (SHA-256 of secret and tenant).
    #[arg(long, env = "PAYOFF_PII_SECRET", hide_env_values = true)]
    pub pii_secret: Option<String>,
    /// TLS certificate (PEM). With --tls-key, the gRPC listener speaks TLS.
    #[arg(long, env = "PAYOFF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "PAYOFF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Most events in one batch request.
    #[arg(long, env = "PAYOFF_INGEST_MAX_BATCH", default_value_t = 500)]
    pub max_batch: usize,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "PAYOFF_INGEST_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Largest single event, in bytes (encoded).
    #[arg(long, env = "PAYOFF_INGEST_MAX_EVENT_BYTES", default_value_t = 64 * 1024)]
    pub max_event_bytes: usize,
    /// Most events validated or produced at once; more wait up to --admit-timeout.
    #[arg(long, env = "PAYOFF_INGEST_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// How long a request waits for room under --max-in-flight before UNAVAILABLE.
    #[arg(long, env = "PAYOFF_INGEST_ADMIT_TIMEOUT", value_parser = humantime_duration, default_value = "1s")]
    pub admit_timeout: Duration,
    /// Longest wait for Kafka's acknowledgement before UNAVAILABLE.
    #[arg(long, env = "PAYOFF_INGEST_PRODUCE_TIMEOUT", value_parser = humantime_duration, default_value = "5s")]
    pub produce_timeout: Duration,
    /// Events per second per API key (burst: one second's worth). 0: unlimited.
    #[arg(long, env = "PAYOFF_INGEST_RATE_PER_KEY", default_value_t = 20_000)]
    pub rate_per_key: u32,
    /// Recent event ids remembered to answer duplicates fast (the attributor stays the
    /// authority).
    #[arg(long, env = "PAYOFF_INGEST_DEDUPE_CACHE", default_value_t = 1_000_000)]
    pub dedupe_cache: usize,
    /// Time allowed for draining on shutdown.
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
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            p.push("--tls-cert and --tls-key go together".to_owned());
        }
        for (name, path) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--api-keys", &self.api_keys),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                p.push(format!("{name} {} is not a readable file", path.display()));
            }
        }
        if self.api_keys.is_none() {
            p.push(
                "--api-keys (PAYOFF_API_KEYS) is required: without keys nobody may send".to_owned(),
            );
        }
        if self.pii_secret.as_deref().is_none_or(str::is_empty) {
            p.push("--pii-secret (PAYOFF_PII_SECRET) is required: PII is hashed with a salt derived from it".to_owned());
        }
        if self.max_batch == 0 || self.max_in_flight == 0 || self.max_event_bytes == 0 {
            p.push(
                "--max-batch, --max-in-flight and --max-event-bytes must be positive".to_owned(),
            );
        }
        if self.max_in_flight < self.max_batch {
            p.push(format!(
                "--max-in-flight ({}) must be at least --max-batch ({})",
                self.max_in_flight, self.max_batch
            ));
        }
        if self.max_event_bytes > self.max_message_bytes {
            p.push("--max-event-bytes must not exceed --max-message-bytes".to_owned());
        }
        if self.dedupe_cache == 0 {
            p.push("--dedupe-cache must be positive".to_owned());
        }
        if self.produce_timeout.is_zero() || self.admit_timeout.is_zero() {
            p.push("--produce-timeout and --admit-timeout must be positive".to_owned());
        }
        if self.drain_timeout <= self.produce_timeout {
            p.push("--drain-timeout must be longer than --produce-timeout, or acknowledged work could be cut off".to_owned());
        }
        p
    }
}
