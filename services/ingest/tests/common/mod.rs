//! Shared helpers: a key file, a config on 127.0.0.1:0, clients with keys.

#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use payoff_ingest::{Config, config::LogFormat};
use payoff_proto::v1::{self, ingest_client::IngestClient};
use payoff_runtime::auth::hash_secret;
use tonic::{metadata::MetadataValue, transport::Channel};

pub const INGEST_KEY: &str = "acme-storefront-secret";
pub const OTHER_TENANT_KEY: &str = "globex-storefront-secret";
pub const READ_KEY: &str = "acme-dashboard-secret";

/// Writes a key file with an ingest key and a read key for `acme`, and an ingest key for
/// `globex`.
pub fn key_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("keys.json");
    let text = format!(
        r#"{{"keys":[
            {{"id":"acme-shop","tenant":"acme","role":"ingest","sha256":"{}"}},
            {{"id":"globex-shop","tenant":"globex","role":"ingest","sha256":"{}"}},
            {{"id":"acme-dash","tenant":"acme","role":"read","sha256":"{}"}}
        ]}}"#,
        hash_secret(INGEST_KEY),
        hash_secret(OTHER_TENANT_KEY),
        hash_secret(READ_KEY)
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A config on loopback ports chosen by the OS.
pub fn config(dir: &tempfile::TempDir, brokers: &str, prefix: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        kafka_brokers: brokers.to_owned(),
        topic_prefix: prefix.to_owned(),
        api_keys: Some(key_file(dir)),
        pii_secret: Some("test-pii-secret".to_owned()),
        tls_cert: None,
        tls_key: None,
        max_batch: 50,
        max_message_bytes: 256 * 1024,
        max_event_bytes: 8 * 1024,
        max_in_flight: 1000,
        admit_timeout: Duration::from_secs(1),
        produce_timeout: Duration::from_secs(5),
        rate_per_key: 0,
        dedupe_cache: 10_000,
        drain_timeout: Duration::from_secs(10),
        log_format: LogFormat::Text,
        log: "warn".to_owned(),
    }
}

/// A client that sends `key` with every request.
pub async fn client(addr: std::net::SocketAddr) -> IngestClient<Channel> {
    IngestClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// A request carrying an API key.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {key}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// Now, as a protobuf timestamp.
pub fn now() -> pbjson_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    pbjson_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap(),
        nanos: 0,
    }
}

/// A valid click.
pub fn click(id: &str, visitor: &str) -> v1::Event {
    v1::Event {
        event_id: id.to_owned(),
        occurred_at: Some(now()),
        context: Some(v1::Context {
            ip: "203.0.113.7".into(),
            user_agent: "Mozilla/5.0".into(),
            ..Default::default()
        }),
        payload: Some(v1::event::Payload::Click(v1::Click {
            visitor_id: visitor.to_owned(),
            link_code: "anna-1".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A valid order.
pub fn order(id: &str, visitor: &str, order_id: &str, amount: &str) -> v1::Event {
    v1::Event {
        event_id: id.to_owned(),
        occurred_at: Some(now()),
        payload: Some(v1::event::Payload::Order(v1::Order {
            visitor_id: visitor.to_owned(),
            order_id: order_id.to_owned(),
            amount: Some(v1::Money {
                amount: amount.to_owned(),
                currency: "USD".into(),
            }),
            email: "Buyer@Example.com ".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}
