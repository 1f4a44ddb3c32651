//! Integration tests of payoff against the real stack: Apache Kafka and Apache Cassandra
//! (or ScyllaDB) as started by `deploy/local/stack up`.
//!
//! The library holds what the tests share: the [`fixture`] (addresses of the stack) and a
//! generated [`scenario`] with its oracle; the tests live in `tests/`.
//! Real-stack tests never skip: when a service cannot be reached, the test fails and says
//! how to start the stack. They must not depend on each other or on leftovers of earlier
//! runs, so every test names its topics, groups and keyspaces with [`fixture::unique_name`].

pub mod fixture;
pub mod scenario;
