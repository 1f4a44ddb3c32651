//! payoff-attributor: the stateful heart of the stream (SPEC §5, §10).
//!
//! It consumes clicks, signups and orders (co-partitioned by visitor), adjustments and
//! lead status (keyed by the order or lead they change) and the order index, decides with
//! the core's `decide`/`apply` which creators earned each conversion, and emits credits,
//! keyed by tenant + campaign + creator. Partition number *p* of every input is one task
//! (see [`task`]); this instance's tasks run on one thread (see [`pipeline`]).
//!
//! Exactly once: credits, order-index records, dead letters, the state changelog and the
//! consumed offsets are committed in one Kafka transaction (`send_offsets_to_transaction`
//! with the group's metadata, so a zombie instance is fenced). State lives in memory and
//! in the compacted changelog; a task's state is restored from it before its first
//! record, and readiness stays false until then. A task commits, per input, the offset of
//! the earliest event it still holds (reorder buffer, waiting corrections), so a restart
//! reads those again; events it had already processed are then duplicates by id.
//!
//! What it must not do: decide anything itself (the core does), or let a credit out
//! without the offsets and state that produced it.
//!
//! # Layout
//! - `config`: flags and environment.
//! - `task`: one partition number's work, with no IO (unit-tested on its own).
//! - `codec`: record formats.
//! - `pipeline`: the Kafka consumer, transactions, rebalances and restore.
//! - `metrics`: metric names and help.

pub mod codec;
pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod task;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;

pub use config::Config;

/// The service name health reports (besides the overall status, `""`).
pub const HEALTH_SERVICE: &str = "payoff.v1.Attributor";

/// Why the attributor could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum AttributorError {
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
    /// Kafka failed (the process stops; a restart restores the committed state).
    #[error("kafka: {0}")]
    Kafka(String),
    /// The health server failed.
    #[error("health server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The processing thread panicked or could not be joined.
    #[error("processing thread failed: {0}")]
    Thread(String),
}

/// A bound, not yet running, attributor.
pub struct Bound {
    /// The gRPC health address.
    pub health_addr: SocketAddr,
    /// The /metrics address.
    pub metrics_addr: SocketAddr,
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    metrics_task: tokio::task::JoinHandle<()>,
}

/// Validates the configuration and binds the listeners (port 0 works, for tests).
pub async fn bind(config: Config, shutdown: CancellationToken) -> Result<Bound, AttributorError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(AttributorError::Config(problems));
    }
    // The recorder must exist before the help texts are registered, or they are lost.
    payoff_runtime::telemetry::metrics_handle();
    metrics::describe();
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| AttributorError::Bind {
                addr: config.listen,
                source,
            })?;
    let health_addr = listener
        .local_addr()
        .map_err(|source| AttributorError::Bind {
            addr: config.listen,
            source,
        })?;
    let (metrics_addr, metrics_task) =
        payoff_runtime::telemetry::serve_metrics(config.metrics_listen, shutdown.clone())
            .await
            .map_err(|source| AttributorError::Bind {
                addr: config.metrics_listen,
                source,
            })?;
    Ok(Bound {
        health_addr,
        metrics_addr,
        listener,
        config,
        shutdown,
        metrics_task,
    })
}

impl Bound {
    /// Runs until the shutdown token is cancelled (or Kafka fails), then finishes the open
    /// transaction and leaves the group, within the drain timeout.
    pub async fn serve(self) -> Result<(), AttributorError> {
        tracing::info!(health = %self.health_addr, metrics = %self.metrics_addr, "attributor listening");
        let Bound {
            listener,
            config,
            shutdown,
            metrics_task,
            ..
        } = self;
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
                        _ = shutdown.cancelled() => return,
                        changed = ready_rx.changed() => if changed.is_err() { return },
                    }
                }
            })
        };
        let server_shutdown = CancellationToken::new();
        let server = {
            let stop = server_shutdown.clone();
            tokio::spawn(
                Server::builder()
                    .add_service(health)
                    .serve_with_incoming_shutdown(payoff_runtime::incoming(listener), async move {
                        stop.cancelled().await;
                    }),
            )
        };
        let loop_shutdown = shutdown.clone();
        let worker = tokio::task::spawn_blocking(move || {
            pipeline::run_blocking(&config, &loop_shutdown, ready_tx)
        });
        let result = match worker.await {
            Ok(r) => r,
            Err(e) => Err(AttributorError::Thread(e.to_string())),
        };
        // The loop ends on shutdown or on a failure; either way, stop the rest.
        shutdown.cancel();
        server_shutdown.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
        readiness.abort();
        metrics_task.abort();
        result
    }
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AttributorError> {
    bind(config, shutdown).await?.serve().await
}
