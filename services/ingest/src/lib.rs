//! payoff-ingest: the front door (SPEC §4, §11, §12).
//!
//! Storefronts send events over gRPC (`payoff.v1.Ingest`: unary, batch with per-item
//! results, client streaming). Each event is authenticated by API key (the tenant comes
//! from the key), validated by `payoff-core` (every broken rule named with its field),
//! stripped of raw PII (hashed with a per-tenant salt) and published to its Kafka topic.
//! A client is acknowledged only after Kafka acknowledged (`acks=all`, idempotent
//! producer), so an acknowledged event is durable and a retry is always safe: a repeated
//! event id is answered as a duplicate here when recent, and ignored by the attributor
//! (the authority) however late it comes.
//!
//! What it must not do: decide attribution or commission, or acknowledge anything it
//! has not written.
//!
//! # Layout
//! - `config`: flags and environment.
//! - `service`: the gRPC service.
//! - `publisher`: Kafka and in-memory sinks.
//! - `dedupe`: the recent-id cache.
//! - `metrics`: metric names and help.

pub mod config;
pub mod dedupe;
pub mod metrics;
pub mod publisher;
pub mod service;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use payoff_adapters::topology::Topics;
use payoff_proto::v1::ingest_server::IngestServer;
use payoff_runtime::auth::KeyStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

pub use config::Config;
use publisher::{KafkaPublisher, MemoryPublisher, Publisher};
use service::{IngestService, Limits};

/// Why the service could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
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
    /// Kafka or the key file could not be set up.
    #[error("startup failed: {0}")]
    Startup(String),
    /// The gRPC server failed.
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A bound, not yet serving, ingest service.
pub struct Bound {
    /// The gRPC address.
    pub grpc_addr: SocketAddr,
    /// The /metrics address.
    pub metrics_addr: SocketAddr,
    listener: TcpListener,
    config: Config,
    keys: KeyStore,
    shutdown: CancellationToken,
    metrics_task: tokio::task::JoinHandle<()>,
}

/// Validates the configuration and binds the listeners (port 0 works, for tests).
pub async fn bind(config: Config, shutdown: CancellationToken) -> Result<Bound, IngestError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(IngestError::Config(problems));
    }
    // The recorder must exist before the help texts are registered, or they are lost.
    payoff_runtime::telemetry::metrics_handle();
    metrics::describe();
    let keys_path = config
        .api_keys
        .clone()
        .ok_or_else(|| IngestError::Config(vec!["--api-keys is required".into()]))?;
    let keys = KeyStore::load(&keys_path).map_err(|e| IngestError::Startup(e.to_string()))?;
    keys.watch(keys_path, Duration::from_secs(5), shutdown.clone());
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| IngestError::Bind {
            addr: config.listen,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| IngestError::Bind {
        addr: config.listen,
        source,
    })?;
    let (metrics_addr, metrics_task) =
        payoff_runtime::telemetry::serve_metrics(config.metrics_listen, shutdown.clone())
            .await
            .map_err(|source| IngestError::Bind {
                addr: config.metrics_listen,
                source,
            })?;
    Ok(Bound {
        grpc_addr,
        metrics_addr,
        listener,
        config,
        keys,
        shutdown,
        metrics_task,
    })
}

impl Bound {
    /// Serves until the shutdown token is cancelled, then drains: stops accepting, lets
    /// in-flight requests finish, flushes the producer; all within the drain timeout.
    pub async fn serve(self) -> Result<(), IngestError> {
        if self.config.kafka_brokers.trim().is_empty() {
            tracing::warn!(
                "no kafka brokers configured: events are kept in memory and nothing is durable"
            );
            let publisher = Arc::new(MemoryPublisher::default());
            return self.serve_with(publisher).await;
        }
        // Keys issued through Admin, read to the end before the first request.
        self.keys
            .follow(
                &self.config.kafka_brokers,
                &Topics::with_prefix(&self.config.topic_prefix).api_keys,
                Duration::from_secs(10),
                self.shutdown.clone(),
            )
            .await
            .map_err(|e| IngestError::Startup(e.to_string()))?;
        let publisher =
            KafkaPublisher::new(&self.config.kafka_brokers, self.config.produce_timeout)
                .map_err(|e| IngestError::Startup(e.to_string()))?;
        self.serve_with(Arc::new(publisher)).await
    }

    /// Serves with a given publisher (in-memory for `payoff dev` and unit tests).
    pub async fn serve_with<P: Publisher>(self, publisher: Arc<P>) -> Result<(), IngestError> {
        let Bound {
            listener,
            config,
            keys,
            shutdown,
            metrics_task,
            grpc_addr,
            ..
        } = self;
        let limits = Limits {
            max_batch: config.max_batch,
            max_event_bytes: config.max_event_bytes,
            max_in_flight: config.max_in_flight,
            admit_timeout: config.admit_timeout,
            rate_per_key: config.rate_per_key,
        };
        let secret = config.pii_secret.clone().unwrap_or_default();
        let service = IngestService::new(
            keys,
            publisher.clone(),
            Topics::with_prefix(&config.topic_prefix),
            secret.as_bytes(),
            config.dedupe_cache,
            limits,
        );
        let grpc = IngestServer::new(service).max_decoding_message_size(config.max_message_bytes);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        // Registered before the server accepts anything: a health check or watch that
        // arrives first sees NOT_SERVING, never "service not registered".
        health_reporter
            .set_not_serving::<IngestServer<IngestService<P>>>()
            .await;
        let health_task = {
            let publisher = publisher.clone();
            let shutdown = shutdown.clone();
            let reporter = health_reporter.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(2));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let up = publisher.is_connected().await;
                    ::metrics::gauge!(metrics::KAFKA_UP).set(if up { 1.0 } else { 0.0 });
                    if up {
                        reporter
                            .set_serving::<IngestServer<IngestService<P>>>()
                            .await;
                    } else {
                        reporter
                            .set_not_serving::<IngestServer<IngestService<P>>>()
                            .await;
                    }
                }
            })
        };
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(payoff_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("payoff.v1.Ingest")
            .with_service_name("grpc.health.v1.Health")
            .build_v1()
            .map_err(|e| IngestError::Startup(e.to_string()))?;

        let mut builder = Server::builder();
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            let tls = payoff_runtime::tls::server_config(cert, key)
                .map_err(|e| IngestError::Startup(e.to_string()))?;
            builder = builder.tls_config(tls)?;
        }
        tracing::info!(addr = %grpc_addr, tls = config.tls_cert.is_some(), "ingest serving");
        let drain = shutdown.clone();
        let server = builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(grpc)
            .serve_with_incoming_shutdown(
                payoff_runtime::incoming(listener),
                drain.cancelled_owned(),
            );
        let mut server = std::pin::pin!(server);
        let served = tokio::select! {
            r = &mut server => r,
            () = shutdown.cancelled() => {
                health_reporter.set_not_serving::<IngestServer<IngestService<P>>>().await;
                match tokio::time::timeout(config.drain_timeout, &mut server).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(timeout = ?config.drain_timeout, "drain timed out, closing open requests");
                        Ok(())
                    }
                }
            }
        };
        health_task.abort();
        if let Err(e) = publisher.flush(config.drain_timeout).await {
            tracing::error!(error = %e, "producer flush failed on shutdown");
        }
        metrics_task.abort();
        tracing::info!("ingest stopped");
        served.map_err(IngestError::from)
    }
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), IngestError> {
    bind(config, shutdown).await?.serve().await
}
