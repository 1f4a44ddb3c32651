//! CQL sessions (ScyllaDB or Apache Cassandra) with a durable default consistency.
//!
//! Every statement run through a session from [`connect`] uses the consistency in
//! [`CqlSettings`] unless the statement sets its own. Only quorum levels can be chosen
//! ([`Durability`]): an acknowledged write must survive the loss of one replica (SPEC §10).

use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;

use crate::error::{AdapterError, Result};

/// The consistency level payoff reads and writes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A majority of all replicas (single data centre, or when cross-DC latency is fine).
    #[default]
    Quorum,
    /// A majority of the replicas in the coordinator's data centre.
    LocalQuorum,
}

impl Durability {
    /// The driver's consistency level for this durability.
    pub fn consistency(self) -> Consistency {
        match self {
            Self::Quorum => Consistency::Quorum,
            Self::LocalQuorum => Consistency::LocalQuorum,
        }
    }
}

/// How to reach the CQL cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqlSettings {
    /// Contact points as `host:port`; the driver discovers the rest of the cluster.
    pub nodes: Vec<String>,
    /// Default consistency of every statement.
    pub durability: Durability,
    /// Client-side deadline of one request.
    pub request_timeout: Duration,
    /// Deadline to open one connection.
    pub connect_timeout: Duration,
}

impl CqlSettings {
    /// Settings for the given contact points, at `QUORUM`, with 10 s request and 5 s
    /// connect timeouts.
    pub fn new(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            durability: Durability::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Settings from a comma-separated node list such as `PAYOFF_SCYLLA_NODES`
    /// (`"10.0.0.1:9042,10.0.0.2:9042"`); blanks are ignored.
    pub fn from_node_list(list: &str) -> Self {
        Self::new(list.split(',').map(str::trim).filter(|n| !n.is_empty()))
    }

    /// Replaces the default consistency.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

/// Opens a session to the cluster; every statement defaults to the settings' consistency.
pub async fn connect(settings: &CqlSettings) -> Result<Session> {
    if settings.nodes.is_empty() {
        return Err(AdapterError::Config("cql node list is empty".into()));
    }
    let profile = ExecutionProfile::builder()
        .consistency(settings.durability.consistency())
        .request_timeout(Some(settings.request_timeout))
        .build();
    let session = SessionBuilder::new()
        .known_nodes(&settings.nodes)
        .connection_timeout(settings.connect_timeout)
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await?;
    Ok(session)
}

/// How a keyspace's replicas are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy` with one replication factor (development and single-DC tests).
    Simple {
        /// Copies of each row.
        factor: u32,
    },
    /// `NetworkTopologyStrategy` with a replication factor per data centre.
    NetworkTopology {
        /// `(data centre, copies)` pairs.
        data_centres: Vec<(String, u32)>,
    },
}

impl Replication {
    fn to_cql(&self) -> Result<String> {
        match self {
            Self::Simple { factor } if *factor >= 1 => Ok(format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}"
            )),
            Self::NetworkTopology { data_centres }
                if !data_centres.is_empty() && data_centres.iter().all(|(_, rf)| *rf >= 1) =>
            {
                let mut cql = String::from("{'class': 'NetworkTopologyStrategy'");
                for (dc, rf) in data_centres {
                    if dc.is_empty() || dc.contains('\'') {
                        return Err(AdapterError::Config(format!("bad data centre name {dc:?}")));
                    }
                    cql.push_str(&format!(", '{dc}': {rf}"));
                }
                cql.push('}');
                Ok(cql)
            }
            other => Err(AdapterError::Config(format!(
                "replication needs at least one copy per data centre, got {other:?}"
            ))),
        }
    }
}

/// Checks that `name` is a plain CQL identifier (letters, digits and `_`, starting with a
/// letter, at most 48 characters), so it can be spliced into a statement unquoted.
pub fn validate_identifier(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if starts_with_letter && rest_ok && name.len() <= 48 {
        return Ok(());
    }
    Err(AdapterError::Config(format!(
        "{name:?} is not a valid CQL identifier"
    )))
}

/// The `CREATE KEYSPACE IF NOT EXISTS` statement for `keyspace`.
pub fn create_keyspace_cql(keyspace: &str, replication: &Replication) -> Result<String> {
    validate_identifier(keyspace)?;
    Ok(format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {} AND durable_writes = true",
        replication.to_cql()?
    ))
}

/// Creates `keyspace` if it does not exist (an existing one is left as it is) and waits
/// for the cluster to agree on the schema.
pub async fn create_keyspace(
    session: &Session,
    keyspace: &str,
    replication: &Replication,
) -> Result<()> {
    let cql = create_keyspace_cql(keyspace, replication)?;
    session
        .query_unpaged(cql, ())
        .await
        .map_err(|e| AdapterError::cql("create keyspace", e))?;
    session.await_schema_agreement().await.map_err(|e| {
        AdapterError::cql("create keyspace", scylla::errors::ExecutionError::from(e))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_list_is_split_and_trimmed() {
        let settings = CqlSettings::from_node_list(" a:9042, b:9042 ,,");
        assert_eq!(settings.nodes, vec!["a:9042", "b:9042"]);
        assert_eq!(settings.durability.consistency(), Consistency::Quorum);
        let local = settings.with_durability(Durability::LocalQuorum);
        assert_eq!(local.durability.consistency(), Consistency::LocalQuorum);
    }

    #[test]
    fn keyspace_statement_names_strategy_and_factor() {
        let cql = create_keyspace_cql("payoff", &Replication::Simple { factor: 1 }).unwrap();
        assert_eq!(
            cql,
            "CREATE KEYSPACE IF NOT EXISTS payoff WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true"
        );
        let nts = Replication::NetworkTopology {
            data_centres: vec![("dc1".into(), 3), ("dc2".into(), 3)],
        };
        assert!(
            create_keyspace_cql("payoff", &nts)
                .unwrap()
                .contains("{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}")
        );
    }

    #[test]
    fn bad_identifiers_and_zero_replication_are_rejected() {
        for bad in ["", "1abc", "a-b", "a;DROP", &"k".repeat(49)] {
            assert!(validate_identifier(bad).is_err(), "{bad:?} accepted");
        }
        assert!(create_keyspace_cql("ok", &Replication::Simple { factor: 0 }).is_err());
        let empty = Replication::NetworkTopology {
            data_centres: vec![],
        };
        assert!(create_keyspace_cql("ok", &empty).is_err());
    }

    #[tokio::test]
    async fn connect_without_nodes_is_a_config_error() {
        let err = connect(&CqlSettings::new(Vec::<String>::new()))
            .await
            .unwrap_err();
        assert!(matches!(err, AdapterError::Config(_)));
    }
}
