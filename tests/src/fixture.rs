//! Where the stack is, and a reachability check that fails loudly.
//!
//! The addresses come from the same variables the services read
//! (`PAYOFF_KAFKA_BROKERS`, `PAYOFF_SCYLLA_NODES`, comma-separated `host:port` lists) and
//! default to the local stack. A service that cannot be reached makes the calling test
//! panic with a message naming the address and what to do; in CI (the `CI` variable is
//! set) the message says the CI script should have started the stack.

use std::hash::{BuildHasher, RandomState};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one TCP connection attempt of the reachability check may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A service of the stack the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// Human name used in messages.
    pub name: &'static str,
    /// Environment variable holding its comma-separated `host:port` list.
    pub env_var: &'static str,
    /// The local stack's address, used when the variable is unset or empty.
    pub default: &'static str,
}

/// Apache Kafka.
pub const KAFKA: Service = Service {
    name: "Kafka",
    env_var: "PAYOFF_KAFKA_BROKERS",
    default: "127.0.0.1:9092",
};

/// Cassandra or ScyllaDB (CQL).
pub const CQL: Service = Service {
    name: "Cassandra/ScyllaDB",
    env_var: "PAYOFF_SCYLLA_NODES",
    default: "127.0.0.1:9042",
};

impl Service {
    /// The configured address list, from the environment or the default.
    pub fn configured(&self) -> String {
        std::env::var(self.env_var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| self.default.to_owned())
    }

    /// The configured addresses after checking that every one accepts TCP connections.
    ///
    /// # Panics
    ///
    /// When an address cannot be reached, with a message that says how to start the stack.
    pub fn require(&self) -> Vec<String> {
        let list = self.configured();
        let addresses = split_list(&list);
        if addresses.is_empty() {
            panic!(
                "{}",
                unreachable_message(self, &list, "the list is empty", in_ci())
            );
        }
        for address in &addresses {
            if let Err(detail) = check_reachable(address, CONNECT_TIMEOUT) {
                panic!("{}", unreachable_message(self, address, &detail, in_ci()));
            }
        }
        addresses
    }
}

/// The Kafka bootstrap list (`host:port,…`), checked reachable. Panics otherwise.
pub fn kafka_brokers() -> String {
    KAFKA.require().join(",")
}

/// The CQL contact points, checked reachable. Panics otherwise.
pub fn cql_nodes() -> Vec<String> {
    CQL.require()
}

/// Whether the tests run in CI (the `CI` variable is set and not `false` or empty).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Splits a comma-separated address list, ignoring blanks.
pub fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Connects to `address` (`host:port`) over TCP, trying each resolved address once.
pub fn check_reachable(address: &str, timeout: Duration) -> Result<(), String> {
    let resolved = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?;
    let mut last_error = format!("{address} resolved to no address");
    for socket in resolved {
        match TcpStream::connect_timeout(&socket, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = format!("cannot connect to {socket}: {e}"),
        }
    }
    Err(last_error)
}

/// The failure message for an unreachable service.
pub fn unreachable_message(service: &Service, address: &str, detail: &str, ci: bool) -> String {
    let what = format!(
        "{} is not reachable at {address} ({}={:?}): {detail}.",
        service.name,
        service.env_var,
        service.configured()
    );
    if ci {
        format!(
            "{what} CI is set, so the real stack must be running: .ci/run starts it with \
             `deploy/local/stack up` before the tests; see its logs under \
             ~/.cache/payoff/stack/logs. Real-stack tests never skip."
        )
    } else {
        format!(
            "{what} Start the local stack with `deploy/local/stack up` (or run the tests \
             with `deploy/local/stack test`), or point {} at a running {}. Real-stack tests \
             never skip.",
            service.env_var, service.name
        )
    }
}

/// A name no earlier run used: `prefix`, `_`, then 16 random hex digits. Valid as a Kafka
/// topic or group and, when `prefix` is, as a CQL identifier.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `RandomState` is seeded randomly per process; hashing time, pid and a counter with it
    // gives a name that differs across runs and within one.
    let random = RandomState::new().hash_one((nanos, std::process::id(), count));
    format!("{prefix}_{random:016x}")
}

/// grpcurl, found on PATH, in `$PAYOFF_GRPCURL`, or where `go install` puts it.
pub fn grpcurl() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("PAYOFF_GRPCURL") {
        return std::path::PathBuf::from(path);
    }
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("grpcurl"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join("go/bin/grpcurl")),
        );
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "grpcurl is not installed: `go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3` (.ci/run does this). This test never skips."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_tell_developers_to_start_the_stack_and_ci_that_it_should_be_up() {
        let local = unreachable_message(&KAFKA, "127.0.0.1:9092", "refused", false);
        assert!(local.contains("deploy/local/stack up"), "{local}");
        assert!(local.contains("PAYOFF_KAFKA_BROKERS"), "{local}");
        assert!(local.contains("never skip"), "{local}");
        let ci = unreachable_message(&CQL, "127.0.0.1:9042", "refused", true);
        assert!(ci.contains("CI is set"), "{ci}");
        assert!(ci.contains("127.0.0.1:9042"), "{ci}");
    }

    #[test]
    fn lists_are_split_and_trimmed() {
        assert_eq!(split_list(" a:1, b:2 ,,"), vec!["a:1", "b:2"]);
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn unique_names_differ_and_are_cql_identifiers() {
        let a = unique_name("payoff_it");
        let b = unique_name("payoff_it");
        assert_ne!(a, b);
        assert!(a.len() <= 48);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn a_closed_port_is_reported_unreachable() {
        // Bind then drop a listener to get a port that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = check_reachable(&format!("127.0.0.1:{port}"), CONNECT_TIMEOUT).unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
