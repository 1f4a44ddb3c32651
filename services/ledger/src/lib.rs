//! payoff-ledger: where the money is (SPEC §6-§11).
//!
//! It consumes the `credits` topic, holds each tenant's credits until every attributor
//! task has passed their event time (progress markers), folds them in the order of their
//! cause through the core's ledger `decide`/`apply` (see [`fold`]), and writes the
//! append-only entries, tier changes, KPI deltas and order explanations to ScyllaDB or
//! Cassandra (see [`store`]). Dashboards query them over gRPC (see [`query`]): balances,
//! entries, tier progress, KPIs, explanations, as-of, and a live watch.
//!
//! Exactly-once effect: the fold of a partition is deterministic and every row's key is
//! derived from its cause, so the consumer commits no offsets; on assignment it re-folds
//! the partition from its beginning and writes only past the fold progress stored with
//! the rows (see [`pipeline`]).
//!
//! What it must not do: decide anything itself (the core does), update or delete a
//! ledger row, or store a status (statuses are derived at the query's instant).
//!
//! # Layout
//! - [`admin`]: the `Admin` gRPC service (program versions, payouts, adjustments).
//! - [`config`]: flags and environment.
//! - [`fold`]: one partition's fold, with no IO (unit-tested on its own).
//! - [`store`]: CQL rows and reads.
//! - [`pipeline`]: the Kafka consumer and the program feed.
//! - [`query`]: the `Ledger` gRPC service.
//! - [`rebuild`]: projections rebuilt from Kafka (`payoff ledger rebuild`).
//! - [`metrics`]: metric names and help.

pub mod admin;
pub mod config;
pub mod error;
pub mod fold;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod rebuild;
pub mod store;
mod tally;

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use payoff_adapters::cql::{self, CqlSettings, Durability};
use payoff_proto::v1::{admin_server::AdminServer, ledger_server::LedgerServer};
use payoff_runtime::auth::KeyStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;

pub use config::Config;
pub use error::LedgerError;

/// The service name health reports (besides the overall status, `""`).
pub const HEALTH_SERVICE: &str = "payoff.v1.Ledger";

/// A bound, not yet running, ledger.
pub struct Bound {
    /// The gRPC address (`Ledger`, health, reflection).
    pub grpc_addr: SocketAddr,
    /// The /metrics address.
    pub metrics_addr: SocketAddr,
    listener: TcpListener,
    config: Config,
    keys: KeyStore,
    shutdown: CancellationToken,
    metrics_task: tokio::task::JoinHandle<()>,
}

/// Validates the configuration, loads the API keys and binds the listeners (port 0
/// works, for tests).
pub async fn bind(config: Config, shutdown: CancellationToken) -> Result<Bound, LedgerError> {
    let mut problems = config.problems();
    if config.api_keys.is_none() {
        problems.push("--api-keys (PAYOFF_API_KEYS) is required".to_owned());
    }
    if !problems.is_empty() {
        return Err(LedgerError::Config(problems));
    }
    // The recorder must exist before the help texts are registered, or they are lost.
    payoff_runtime::telemetry::metrics_handle();
    metrics::describe();
    let keys = match &config.api_keys {
        Some(path) => {
            let keys = KeyStore::load(path).map_err(|e| LedgerError::Setup(e.to_string()))?;
            keys.watch(path.clone(), Duration::from_secs(5), shutdown.clone());
            keys.follow(
                &config.kafka_brokers,
                &payoff_adapters::topology::Topics::with_prefix(&config.topic_prefix).api_keys,
                Duration::from_secs(10),
                shutdown.clone(),
            )
            .await
            .map_err(|e| LedgerError::Setup(e.to_string()))?;
            keys
        }
        None => unreachable!("checked above"),
    };
    let bind_error = |addr| move |source| LedgerError::Bind { addr, source };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(bind_error(config.listen))?;
    let grpc_addr = listener.local_addr().map_err(bind_error(config.listen))?;
    let (metrics_addr, metrics_task) =
        payoff_runtime::telemetry::serve_metrics(config.metrics_listen, shutdown.clone())
            .await
            .map_err(bind_error(config.metrics_listen))?;
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
    /// Runs until the shutdown token is cancelled (or Kafka or the store fails): stops
    /// accepting queries, writes what is folded, leaves the group.
    pub async fn serve(self) -> Result<(), LedgerError> {
        let Bound {
            grpc_addr,
            metrics_addr,
            listener,
            config,
            keys,
            shutdown,
            metrics_task,
        } = self;
        tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, "ledger listening");
        let durability = match config.consistency {
            config::Consistency::Quorum => Durability::Quorum,
            config::Consistency::LocalQuorum => Durability::LocalQuorum,
        };
        let session = cql::connect(
            &CqlSettings::from_node_list(&config.scylla_nodes).with_durability(durability),
        )
        .await
        .map_err(LedgerError::Store)?;
        let store = store::Store::Cql(Box::new(
            store::CqlStore::new(Arc::new(session), &config.keyspace)
                .await?
                .with_cache(config.query_cache_entries),
        ));
        let (updates, _) = tokio::sync::broadcast::channel(4_096);
        let shared = pipeline::Shared {
            catalog: Arc::default(),
            store,
            programs: Arc::new(RwLock::new(fold::Programs::default())),
            updates,
        };

        let (reporter, health) = tonic_health::server::health_reporter();
        for name in ["", HEALTH_SERVICE] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
        let readiness = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let ready = *ready_rx.borrow_and_update();
                    ::metrics::gauge!(metrics::READY).set(if ready { 1.0 } else { 0.0 });
                    let status = if ready {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    for name in ["", HEALTH_SERVICE] {
                        reporter.set_service_status(name, status).await;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        changed = ready_rx.changed() => if changed.is_err() { return },
                    }
                }
            })
        };
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(payoff_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| LedgerError::Setup(format!("reflection: {e}")))?;
        let mut builder = Server::builder();
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            let tls = payoff_runtime::tls::server_config(cert, key)
                .map_err(|e| LedgerError::Setup(format!("tls: {e}")))?;
            builder = builder
                .tls_config(tls)
                .map_err(|e| LedgerError::Setup(format!("tls: {e}")))?;
        }
        let admin = admin::AdminService::new(
            shared.clone(),
            keys.clone(),
            &config.kafka_brokers,
            payoff_adapters::topology::Topics::with_prefix(&config.topic_prefix),
        )?;
        let server_shutdown = CancellationToken::new();
        let server = {
            let stop = server_shutdown.clone();
            tokio::spawn(
                builder
                    .add_service(health)
                    .add_service(reflection)
                    .add_service(LedgerServer::new(query::LedgerService::new(
                        shared.clone(),
                        keys,
                    )))
                    .add_service(AdminServer::new(admin))
                    .serve_with_incoming_shutdown(payoff_runtime::incoming(listener), async move {
                        stop.cancelled().await;
                    }),
            )
        };
        let result = pipeline::run(&config, &shared, &shutdown, &ready_tx).await;
        shutdown.cancel();
        server_shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        readiness.abort();
        metrics_task.abort();
        result
    }
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), LedgerError> {
    bind(config, shutdown).await?.serve().await
}

/// Serves the `Ledger` queries (with health SERVING and reflection) over `shared` on
/// `listener` until `shutdown`: for an in-memory ledger ([`store::Store::Memory`], `payoff
/// dev`), where no consumer runs.
pub async fn serve_queries(
    listener: TcpListener,
    shared: pipeline::Shared,
    keys: KeyStore,
    shutdown: CancellationToken,
) -> Result<(), LedgerError> {
    metrics::describe();
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in ["", HEALTH_SERVICE] {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(payoff_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| LedgerError::Setup(format!("reflection: {e}")))?;
    Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(LedgerServer::new(query::LedgerService::new(shared, keys)))
        .serve_with_incoming_shutdown(payoff_runtime::incoming(listener), async move {
            shutdown.cancelled().await;
        })
        .await?;
    Ok(())
}
