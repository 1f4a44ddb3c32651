//! The ledger's error type, and how it becomes a gRPC status (through
//! `payoff_runtime::ServiceError`, the one mapping).

use std::net::SocketAddr;

use payoff_adapters::AdapterError;
use payoff_runtime::ServiceError;

/// Why the ledger could not start, stopped, or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The configuration is unusable; every problem is listed.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Kafka failed (the process stops; a restart re-folds and stores what is missing).
    #[error("kafka: {0}")]
    Kafka(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(AdapterError),
    /// TLS or key files could not be loaded.
    #[error("{0}")]
    Setup(String),
    /// The gRPC server failed.
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// Stored data that cannot be read back, or a bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<LedgerError> for ServiceError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Store(_) | LedgerError::Kafka(_) => Self::Unavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}
