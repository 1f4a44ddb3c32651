//! The crate's error type, with the line between retryable infrastructure failures and
//! mistakes that retrying cannot fix.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use scylla::errors::{DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError};

/// Result of an adapter operation.
pub type Result<T> = std::result::Result<T, AdapterError>;

/// A failure talking to Kafka or to the CQL store, or a bad adapter configuration.
///
/// Every variant names the operation that failed. [`AdapterError::is_retryable`] tells a
/// transient infrastructure failure (broker or node down, timeout, leader moving) from a
/// failure that will happen again (bad configuration, rejected statement).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The caller passed a setting that cannot work (empty node list, bad identifier…).
    #[error("invalid adapter configuration: {0}")]
    Config(String),

    /// A Kafka client operation failed.
    #[error("kafka {op} failed: {source}")]
    Kafka {
        /// What the adapter was doing, e.g. `"create producer"`.
        op: &'static str,
        /// The client's error.
        #[source]
        source: KafkaError,
    },

    /// The broker refused to create a topic (other than because it already exists).
    #[error("kafka refused to create topic {topic}: {code}")]
    TopicCreation {
        /// The topic's name.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },

    /// A created topic, or one of its partitions' leaders, did not appear in the
    /// brokers' metadata in time.
    #[error("topic {topic} not in the brokers' metadata {after:?} after its creation")]
    TopicNotVisible {
        /// The topic's name.
        topic: String,
        /// How long it waited.
        after: Duration,
    },

    /// Opening a CQL session failed.
    #[error("cql connect failed: {0}")]
    CqlConnect(Box<NewSessionError>),

    /// Preparing a CQL statement failed.
    #[error("cql prepare failed: {0}")]
    CqlPrepare(Box<PrepareError>),

    /// Executing a CQL statement failed.
    #[error("cql {op} failed: {source}")]
    CqlExecution {
        /// What the adapter was doing, e.g. `"create keyspace"`.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: Box<ExecutionError>,
    },

    /// An operation did not finish within its deadline.
    #[error("{op} did not finish within {after:?}")]
    Timeout {
        /// What the adapter was waiting for.
        op: &'static str,
        /// How long it waited.
        after: Duration,
    },
}

impl AdapterError {
    /// Wraps a Kafka client error with the operation that produced it.
    pub fn kafka(op: &'static str, source: KafkaError) -> Self {
        Self::Kafka { op, source }
    }

    /// Wraps a CQL execution error with the operation that produced it.
    pub fn cql(op: &'static str, source: ExecutionError) -> Self {
        Self::CqlExecution {
            op,
            source: Box::new(source),
        }
    }

    /// Whether the same operation may succeed if tried again later: the failure came from
    /// the infrastructure being unreachable, overloaded, slow or moving leadership, not
    /// from the request itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config(_) => false,
            Self::Kafka { source, .. } => kafka_retryable(source),
            Self::TopicCreation { code, .. } => code_retryable(*code),
            Self::TopicNotVisible { .. } => true,
            Self::CqlConnect(err) => matches!(**err, NewSessionError::MetadataError(_)),
            Self::CqlPrepare(err) => matches!(**err, PrepareError::ConnectionPoolError(_)),
            Self::CqlExecution { source, .. } => execution_retryable(source),
            Self::Timeout { .. } => true,
        }
    }
}

impl From<NewSessionError> for AdapterError {
    fn from(err: NewSessionError) -> Self {
        Self::CqlConnect(Box::new(err))
    }
}

impl From<PrepareError> for AdapterError {
    fn from(err: PrepareError) -> Self {
        Self::CqlPrepare(Box::new(err))
    }
}

fn kafka_retryable(err: &KafkaError) -> bool {
    match err {
        KafkaError::Transaction(inner) => {
            !inner.is_fatal() && (inner.is_retriable() || code_retryable(inner.code()))
        }
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) | KafkaError::Nul(_) => false,
        other => other.rdkafka_error_code().is_some_and(code_retryable),
    }
}

fn code_retryable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::MessageTimedOut
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NotCoordinator
            | C::CoordinatorNotAvailable
            | C::CoordinatorLoadInProgress
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::QueueFull
            | C::ConcurrentTransactions
    )
}

fn execution_retryable(err: &ExecutionError) -> bool {
    match err {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_) => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
                    | DbError::TruncateError
            ),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_not_retryable() {
        assert!(!AdapterError::Config("no nodes".into()).is_retryable());
    }

    #[test]
    fn broker_outage_is_retryable_but_bad_config_is_not() {
        let down =
            AdapterError::kafka("flush", KafkaError::Flush(RDKafkaErrorCode::AllBrokersDown));
        assert!(down.is_retryable());
        let refused = AdapterError::TopicCreation {
            topic: "t".into(),
            code: RDKafkaErrorCode::InvalidReplicationFactor,
        };
        assert!(!refused.is_retryable());
    }

    #[test]
    fn timeouts_are_retryable() {
        let err = AdapterError::Timeout {
            op: "init transactions",
            after: Duration::from_secs(1),
        };
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "init transactions did not finish within 1s"
        );
    }
}
