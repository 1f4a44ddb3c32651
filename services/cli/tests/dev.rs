//! `payoff dev` in memory, in this process on 127.0.0.1:0: the example events go in
//! through ingest's gRPC, and the ledger's balances answer exactly what `payoff replay`
//! computes for the same events and program.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use payoff_cli::{
    dev::{self, DEV_INGEST_KEY, DEV_READ_KEY, DevArgs},
    replay,
};
use payoff_proto::{
    convert::to_timestamp,
    v1::{self, ingest_client::IngestClient, ledger_client::LedgerClient},
};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_in_memory_answers_what_replay_computes() -> Result<()> {
    let program = root().join("deploy/examples/program.json");
    let events_path = root().join("deploy/examples/events.jsonl");
    let args = DevArgs {
        program: program.clone(),
        kafka_brokers: String::new(),
        scylla_nodes: String::new(),
        ingest_listen: "127.0.0.1:0".parse()?,
        ledger_listen: "127.0.0.1:0".parse()?,
        metrics_listen: "127.0.0.1:0".parse()?,
        refresh: Duration::from_secs(1),
        plain: true,
    };
    let shutdown = CancellationToken::new();
    let running = dev::start_memory(&args, shutdown.clone()).await?;

    // The example events through ingest, in batches.
    let events: Vec<v1::Event> = std::fs::read_to_string(&events_path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut ingest = IngestClient::connect(format!("http://{}", running.ingest)).await?;
    for chunk in events.chunks(100) {
        let answer = ingest
            .send_batch(with_key(
                DEV_INGEST_KEY,
                v1::SendBatchRequest {
                    events: chunk.to_vec(),
                },
            ))
            .await?
            .into_inner();
        use v1::event_result::Status;
        assert!(
            answer.results.iter().all(
                |r| r.status == Status::Accepted as i32 || r.status == Status::Duplicate as i32
            ),
            "every example event is accepted (or a repeat): {answer:?}"
        );
    }

    // What replay computes, as of after the last event.
    let programs = payoff_cli::input::programs(&[&program])?;
    let (engine, last) = replay::run_engine(programs, &events_path, b"dev", true)?;
    let as_of = last.plus(payoff_core::time::Duration::hours(24 * 60));
    let report = engine.report(as_of);
    assert!(!report.balances.is_empty());

    let mut ledger = LedgerClient::connect(format!("http://{}", running.ledger)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for want in &report.balances {
        loop {
            let got = ledger
                .get_balance(with_key(
                    DEV_READ_KEY,
                    v1::GetBalanceRequest {
                        creator_id: want.creator.as_str().into(),
                        campaign_id: String::new(),
                        as_of: Some(to_timestamp(as_of)),
                    },
                ))
                .await?
                .into_inner();
            let line = got
                .currencies
                .iter()
                .find(|c| c.currency == want.currency.code());
            let available = line
                .and_then(|l| l.available.as_ref())
                .map(|m| m.amount.parse::<Decimal>())
                .transpose()?;
            if available.map(|a| a.normalize()) == Some(want.available.amount.normalize()) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: available {available:?}, want {}",
                    want.creator.as_str(),
                    want.available.amount
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let summary = running.pipeline.summary();
    assert!(summary.credited_orders > 0 && summary.entries > 0);
    let screen = dev::render(&summary, Duration::from_secs(3), &dev::Summary::default());
    assert!(
        screen.contains("top creators") && screen.contains("ROAS"),
        "{screen}"
    );
    shutdown.cancel();
    running.join().await.context("payoff dev stops cleanly")?;
    Ok(())
}
