//! The ledger against the real Kafka and Cassandra, end to end: a generated scenario goes
//! through the attributor (in this process) into `credits`, the ledger (a process, so it
//! can be killed with SIGKILL) folds it into Cassandra, and every query answer equals
//! what the offline engine (`payoff replay`) computes for the same events: balances as of
//! an instant, entries with their status, tier progress and campaign KPIs.
//!
//! Every wait is a poll with a deadline; nothing sleeps as synchronisation.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser as _;
use payoff_adapters::{
    cql::{self, CqlSettings, Replication},
    kafka as adapters, schema,
    topology::{self, Topics},
};
use payoff_core::{engine::Engine, time::Timestamp};
use payoff_proto::{
    convert::to_timestamp,
    v1::{self, ledger_client::LedgerClient},
};
use payoff_runtime::auth::hash_secret;
use payoff_tests::{
    fixture,
    scenario::{self, Options, Scenario},
};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const PARTITIONS: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(240);
const READ_KEY: &str = "read-secret-for-tests";
const INGEST_KEY: &str = "ingest-secret-for-tests";
const OTHER_TENANT_KEY: &str = "other-tenant-secret-for-tests";
const CREATOR_KEY: &str = "creator-secret-for-tests";
const ADMIN_KEY: &str = "admin-secret-for-tests";
/// The creator of `CREATOR_KEY` (one of the example program's creators).
const CREATOR: &str = "anna";

struct Setup {
    brokers: String,
    prefix: String,
    keyspace: String,
    keys: tempfile::NamedTempFile,
    attributor: CancellationToken,
}

impl Setup {
    async fn new(name: &str, scenario: &Scenario) -> Result<Self> {
        let brokers = fixture::kafka_brokers();
        let prefix = format!("{}.", fixture::unique_name(name));
        let topics = Topics::with_prefix(&prefix);
        adapters::ensure_topics(
            &brokers,
            &topics.specs(PARTITIONS, 1),
            Duration::from_secs(30),
        )
        .await
        .context("create topics")?;
        let keyspace = fixture::unique_name("ledger").replace(['-', '.'], "_");
        let session = cql::connect(&CqlSettings::new(fixture::cql_nodes())).await?;
        cql::create_keyspace(&session, &keyspace, &Replication::Simple { factor: 1 }).await?;
        schema::migrate(&session, &keyspace).await?;

        let keys = tempfile::NamedTempFile::new()?;
        std::fs::write(
            keys.path(),
            serde_json::json!({"keys": [
                {"id": "dash", "tenant": scenario::TENANT, "role": "read", "sha256": hash_secret(READ_KEY)},
                {"id": "shop", "tenant": scenario::TENANT, "role": "ingest", "sha256": hash_secret(INGEST_KEY)},
                {"id": "other", "tenant": "other-tenant", "role": "read", "sha256": hash_secret(OTHER_TENANT_KEY)},
                {"id": "creator", "tenant": scenario::TENANT, "role": "creator", "creator": CREATOR, "sha256": hash_secret(CREATOR_KEY)},
                {"id": "admin", "tenant": scenario::TENANT, "role": "admin", "sha256": hash_secret(ADMIN_KEY)},
            ]})
            .to_string(),
        )?;

        let mut config = adapters::base_config(&brokers, "ledger-test")?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", topology::PARTITIONER);
        let producer: FutureProducer = config.create()?;
        let key = topology::key(&[scenario::TENANT, "1"]);
        let program = scenario.program.encode_to_vec();
        producer
            .send(
                FutureRecord::to(&topics.programs)
                    .key(&key)
                    .payload(&program),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .context("publish program")?;
        let records: Vec<(String, String, Vec<u8>)> = scenario
            .records(&topics)
            .into_iter()
            .map(|(t, k, e)| (t, k, e.encode_to_vec()))
            .collect();
        let mut deliveries = Vec::new();
        for (topic, key, payload) in &records {
            deliveries.push(
                producer
                    .send_result(FutureRecord::to(topic).key(key).payload(payload))
                    .map_err(|(e, _)| e)?,
            );
        }
        for d in deliveries {
            d.await
                .context("delivery dropped")?
                .map_err(|(e, _)| e)
                .context("not delivered")?;
        }

        Ok(Self {
            brokers,
            prefix,
            keyspace,
            keys,
            attributor: CancellationToken::new(),
        })
    }

    /// Starts the attributor in this process (credits start flowing).
    fn start_attributor(&self) -> Result<()> {
        let config = payoff_attributor::Config::try_parse_from([
            "payoff-attributor",
            "--kafka-brokers",
            &self.brokers,
            "--topic-prefix",
            &self.prefix,
            "--group-id",
            &fixture::unique_name("attributor"),
            "--instance-id",
            &fixture::unique_name("attr"),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--correction-wait",
            "3650days",
            "--max-idle",
            "120s",
            // Events produced in steps are one stream: a quiet spell between steps must
            // not release the tail early.
            "--quiet-release",
            "1000h",
        ])?;
        let token = self.attributor.clone();
        tokio::spawn(async move {
            if let Err(e) = payoff_attributor::run(config, token).await {
                eprintln!("attributor failed: {e}");
            }
        });
        Ok(())
    }

    fn start_ledger(&self, group: &str) -> Result<LedgerProcess> {
        self.start_ledger_with(group, &[], None)
    }

    /// Starts the ledger with more flags; `ca` is the PEM certificate its TLS listener
    /// presents (clients then connect with TLS, checking it).
    fn start_ledger_with(
        &self,
        group: &str,
        extra: &[&str],
        ca: Option<&str>,
    ) -> Result<LedgerProcess> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_payoff-ledger"))
            .args(extra)
            .args([
                "--kafka-brokers",
                &self.brokers,
                "--scylla-nodes",
                &fixture::cql_nodes().join(","),
                "--keyspace",
                &self.keyspace,
                "--topic-prefix",
                &self.prefix,
                "--group-id",
                group,
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--api-keys",
                &self.keys.path().display().to_string(),
                "--log-format",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start payoff-ledger")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if std::env::var_os("LEDGER_TEST_LOGS").is_some()
                    || line.contains("\"level\":\"WARN\"")
                    || line.contains("\"level\":\"ERROR\"")
                {
                    eprintln!("[ledger] {line}");
                }
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .context("no \"ledger listening\" log line")?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "ledger listening"
            {
                let grpc = v["grpc"].as_str().context("no grpc field")?.to_owned();
                return Ok(LedgerProcess {
                    child,
                    grpc,
                    ca: ca.map(str::to_owned),
                    _lines: lines,
                });
            }
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.attributor.cancel();
    }
}

struct LedgerProcess {
    child: Child,
    grpc: String,
    /// With TLS: the certificate to trust.
    ca: Option<String>,
    _lines: std::sync::mpsc::Receiver<String>,
}

impl LedgerProcess {
    /// A connection to the gRPC listener (TLS when the ledger was started with it).
    async fn channel(&self) -> Result<Channel> {
        let channel = match &self.ca {
            None => Channel::from_shared(format!("http://{}", self.grpc))?,
            Some(pem) => Channel::from_shared(format!("https://{}", self.grpc))?.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name("localhost"),
            )?,
        };
        Ok(channel.connect().await?)
    }

    /// Waits until health says SERVING (programs loaded, consuming).
    async fn serving(&self, deadline: Instant) -> Result<()> {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let mut health = HealthClient::new(self.channel().await?);
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: "payoff.v1.Ledger".into(),
                })
                .await?
                .into_inner()
                .status;
            if status == ServingStatus::Serving as i32 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the ledger is not serving before the deadline");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn client(&self) -> Result<LedgerClient<Channel>> {
        Ok(LedgerClient::new(self.channel().await?))
    }

    fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for LedgerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    with_key(READ_KEY, message)
}

fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn decimal(m: Option<&v1::Money>) -> Decimal {
    m.map_or(Decimal::ZERO, |m| m.amount.parse().unwrap())
        .normalize()
}

/// The oracle: the engine after every event.
fn engine(scenario: &Scenario) -> Engine {
    let mut engine = Engine::new(scenario.programs());
    for e in scenario.core_events() {
        engine.push(e);
    }
    engine.finish();
    engine
}

/// The oracle's report as of `as_of`.
fn oracle(scenario: &Scenario, as_of: Timestamp) -> payoff_core::engine::Report {
    engine(scenario).report(as_of)
}

/// Balances per (creator, currency) the ledger answers, as of `as_of`.
async fn balances(
    client: &mut LedgerClient<Channel>,
    creators: &[String],
    as_of: Timestamp,
) -> Result<BTreeMap<(String, String), [Decimal; 5]>> {
    let mut out = BTreeMap::new();
    for creator in creators {
        let b = client
            .get_balance(authorized(v1::GetBalanceRequest {
                creator_id: creator.clone(),
                campaign_id: String::new(),
                as_of: Some(to_timestamp(as_of)),
            }))
            .await?
            .into_inner();
        for c in b.currencies {
            out.insert(
                (creator.clone(), c.currency.clone()),
                [
                    decimal(c.pending.as_ref()),
                    decimal(c.approved.as_ref()),
                    decimal(c.paid.as_ref()),
                    decimal(c.reversed.as_ref()),
                    decimal(c.available.as_ref()),
                ],
            );
        }
    }
    Ok(out)
}

fn want_balances(report: &payoff_core::engine::Report) -> BTreeMap<(String, String), [Decimal; 5]> {
    report
        .balances
        .iter()
        .map(|b| {
            (
                (b.creator.as_str().to_owned(), b.currency.code().to_owned()),
                [
                    b.pending.amount.normalize(),
                    b.approved.amount.normalize(),
                    b.paid.amount.normalize(),
                    b.reversed.amount.normalize(),
                    b.available.amount.normalize(),
                ],
            )
        })
        .collect()
}

/// Polls until the ledger's balances equal the oracle's (or the deadline passes, then
/// fails with the difference).
async fn until_balances_equal(
    ledger: &LedgerProcess,
    report: &payoff_core::engine::Report,
    deadline: Instant,
) -> Result<()> {
    let want = want_balances(report);
    let creators: Vec<String> = want
        .keys()
        .map(|(c, _)| c.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut client = ledger.client().await?;
    loop {
        let got = balances(&mut client, &creators, report.as_of).await?;
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            let differ: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), *v, got.get(k).copied()))
                .take(5)
                .collect();
            bail!("balances differ after the deadline (creator, currency, want, got): {differ:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every entry, tier progress and campaign KPI equals the oracle's.
async fn assert_queries_equal(
    ledger: &LedgerProcess,
    report: &payoff_core::engine::Report,
) -> Result<()> {
    let mut client = ledger.client().await?;
    // Entries per creator, paged, with ids, amounts and kinds.
    let mut want: BTreeMap<String, Vec<(String, String, Decimal)>> = BTreeMap::new();
    for e in &report.entries {
        want.entry(e.entry.creator.as_str().to_owned())
            .or_default()
            .push((
                e.entry.id.to_text(),
                e.entry.kind.as_str().to_owned(),
                e.entry.amount.amount.normalize(),
            ));
    }
    for (creator, want) in &want {
        let mut got = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_entries(authorized(v1::ListEntriesRequest {
                    creator_id: creator.clone(),
                    campaign_id: String::new(),
                    range: None,
                    page_size: 50,
                    page_token: token.clone(),
                }))
                .await?
                .into_inner();
            for e in page.entries {
                let (_, entry) = payoff_proto::convert::entry_from_proto(&e)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                got.push((
                    entry.id.to_text(),
                    entry.kind.as_str().to_owned(),
                    entry.amount.amount.normalize(),
                ));
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(&got, want, "entries of {creator}");
    }
    // Tier progress per (campaign, creator, period).
    for t in &report.tier_progress {
        let got = client
            .get_tier_progress(authorized(v1::GetTierProgressRequest {
                creator_id: t.creator.as_str().to_owned(),
                campaign_id: t.campaign.as_str().to_owned(),
                period: t.period.label(),
            }))
            .await?
            .into_inner();
        assert_eq!(i64::try_from(got.count)?, t.orders, "tier count of {t:?}");
        assert_eq!(
            decimal(got.revenue.as_ref()),
            t.revenue.normalize(),
            "tier revenue of {t:?}"
        );
    }
    // Campaign KPIs, in total and per creator.
    for (campaign, want) in &report.kpis {
        let got = client
            .get_campaign_kpis(authorized(v1::GetCampaignKpisRequest {
                campaign_id: campaign.as_str().to_owned(),
                range: Some(v1::TimeRange {
                    start: None,
                    end: Some(to_timestamp(
                        report.as_of.plus(payoff_core::time::Duration(1)),
                    )),
                }),
                creator_id: String::new(),
            }))
            .await?
            .into_inner();
        let total = got.total.context("total")?;
        assert_eq!(
            decimal(total.revenue.as_ref()),
            want.total.totals.revenue.normalize(),
            "revenue of {campaign}"
        );
        assert_eq!(
            decimal(total.cost.as_ref()),
            want.total.totals.cost.normalize(),
            "cost of {campaign}"
        );
        assert_eq!(
            total.clicks, want.total.totals.clicks,
            "clicks of {campaign}"
        );
        assert_eq!(
            total.roas,
            want.total.kpis.roas.map(|d| d.to_string()),
            "ROAS of {campaign}"
        );
        assert_eq!(
            got.creators.len(),
            want.per_creator.len(),
            "creators of {campaign}"
        );
    }
    Ok(())
}

fn as_of(scenario: &Scenario) -> Timestamp {
    // After every event (sentinels excluded), so that holds and statuses are settled the
    // same way in both.
    let last = scenario
        .core_events()
        .iter()
        .filter(|e| !e.id.as_str().starts_with("sentinel-"))
        .map(|e| e.occurred_at)
        .max()
        .unwrap_or(Timestamp(0));
    last.plus(payoff_core::time::Duration::hours(24 * 400))
}

/// Reads `n` updates from a watch stream (fails at the deadline), as entry ids with their
/// (campaign, creator).
/// Entries (campaign, creator, id) and tier progress updates, until `n` entries.
type Watched = (Vec<(String, String, String)>, Vec<v1::TierProgress>);

async fn watched(
    stream: &mut tonic::Streaming<v1::WatchEvent>,
    n: usize,
    deadline: Instant,
) -> Result<Watched> {
    let mut out = Vec::new();
    let mut tiers = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(next) = tokio::time::timeout(left, stream.message()).await else {
            bail!("watch: {} of {n} updates before the deadline", out.len());
        };
        match next?.and_then(|e| e.update) {
            Some(v1::watch_event::Update::Entry(e)) => {
                out.push((e.campaign_id, e.creator_id, e.entry_id))
            }
            Some(v1::watch_event::Update::TierProgress(t)) => tiers.push(t),
            None => bail!("watch stream ended after {} updates", out.len()),
        }
    }
    Ok((out, tiers))
}

/// Reads tier updates until the latest of every (campaign, creator, period) of `want`
/// has its net order count (replay's tier progress).
async fn until_tiers(
    stream: &mut tonic::Streaming<v1::WatchEvent>,
    mut seen: Vec<v1::TierProgress>,
    want: &[payoff_core::projection::TierProgress],
    deadline: Instant,
) -> Result<()> {
    let want: BTreeMap<(String, String, String), u64> = want
        .iter()
        .map(|t| {
            (
                (
                    t.campaign.as_str().to_owned(),
                    t.creator.as_str().to_owned(),
                    t.period.label(),
                ),
                u64::try_from(t.orders).unwrap_or_default(),
            )
        })
        .collect();
    loop {
        let mut latest: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        for t in &seen {
            latest.insert(
                (
                    t.campaign_id.clone(),
                    t.creator_id.clone(),
                    t.period.clone(),
                ),
                t.count,
            );
        }
        if want.iter().all(|(k, n)| latest.get(k) == Some(n)) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(next) = tokio::time::timeout(left, stream.message()).await else {
            bail!("watched tier progress {latest:?} never reached replay's {want:?}");
        };
        match next?.and_then(|e| e.update) {
            Some(v1::watch_event::Update::TierProgress(t)) => seen.push(t),
            Some(v1::watch_event::Update::Entry(_)) => {}
            None => bail!("watch stream ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_equals_the_replay_of_the_same_events() -> Result<()> {
    let scenario = scenario::generate(Options {
        seed: 21,
        visitors: 600,
        sentinels: 60,
    });
    let engine = engine(&scenario);
    let report = engine.report(as_of(&scenario));
    assert!(report.entries.len() > 100, "the scenario books something");
    let setup = Setup::new("ledger-eq", &scenario).await?;
    let ledger = setup.start_ledger(&fixture::unique_name("ledger"))?;
    let deadline = Instant::now() + DEADLINE;
    // Watchers subscribe before the first credit exists.
    let mut client = ledger.client().await?;
    let mut all = client
        .watch(authorized(v1::WatchRequest::default()))
        .await?
        .into_inner();
    let mut mine = client
        .watch(with_key(CREATOR_KEY, v1::WatchRequest::default()))
        .await?
        .into_inner();
    setup.start_attributor()?;
    until_balances_equal(&ledger, &report, deadline).await?;
    assert_queries_equal(&ledger, &report).await?;

    // The watch: each entry once, each book's entries in the order they were booked.
    let (got, tiers) = watched(&mut all, engine.entries.len(), deadline).await?;
    // Tier progress changes are watched too: the latest of each equals replay's.
    assert!(!report.tier_progress.is_empty());
    until_tiers(&mut all, tiers, &report.tier_progress, deadline).await?;
    let book = |c: &str, r: &str, list: &[(String, String, String)]| -> Vec<String> {
        list.iter()
            .filter(|(cc, rr, _)| cc == c && rr == r)
            .map(|(_, _, id)| id.clone())
            .collect()
    };
    let want: Vec<(String, String, String)> = engine
        .entries
        .iter()
        .map(|e| {
            (
                e.campaign.as_str().to_owned(),
                e.creator.as_str().to_owned(),
                e.id.to_text(),
            )
        })
        .collect();
    let books: std::collections::BTreeSet<(String, String)> = want
        .iter()
        .map(|(c, r, _)| (c.clone(), r.clone()))
        .collect();
    for (c, r) in &books {
        assert_eq!(
            book(c, r, &got),
            book(c, r, &want),
            "watched entries of ({c}, {r})"
        );
    }
    let anna = want.iter().filter(|(_, r, _)| r == CREATOR).count();
    assert!(anna > 0, "anna earned something");
    let (got_mine, _) = watched(&mut mine, anna, deadline).await?;
    assert!(
        got_mine.iter().all(|(_, r, _)| r == CREATOR),
        "a creator key watches only its creator"
    );

    assert_scopes(&ledger, &report).await?;
    assert_admin(&ledger, &scenario, &report, deadline).await?;
    // Last: it sends an event through ingest.
    assert_api_keys(&ledger, &setup, deadline).await?;
    Ok(())
}

/// API keys issued and revoked through `Admin` (§11): validated, usable on the ledger at
/// once and on ingest (another service, following the `api-keys` topic) shortly after;
/// revoked, refused everywhere; the secret is only in the answer.
async fn assert_api_keys(ledger: &LedgerProcess, setup: &Setup, deadline: Instant) -> Result<()> {
    use payoff_proto::v1::{
        ApiKeyRole, admin_client::AdminClient, event::Payload, ingest_client::IngestClient,
    };
    use tonic::Code;
    let channel = ledger.channel().await?;
    let mut admin = AdminClient::new(channel);
    let mut client = ledger.client().await?;
    let put = |id: &str, role: ApiKeyRole, creator: &str| v1::PutApiKeyRequest {
        key_id: id.into(),
        role: role.into(),
        creator_id: creator.into(),
        description: "issued by the stack test".into(),
    };
    let code = |r: Result<tonic::Response<v1::PutApiKeyResponse>, tonic::Status>| {
        r.err().map(|s| s.code())
    };

    // Refused: not an admin, invalid requests.
    assert_eq!(
        code(
            admin
                .put_api_key(with_key(READ_KEY, put("dash-2", ApiKeyRole::Read, "")))
                .await
        ),
        Some(Code::PermissionDenied),
        "a read key issues no keys"
    );
    for (bad, why) in [
        (put("dash-2", ApiKeyRole::Unspecified, ""), "no role"),
        (put("", ApiKeyRole::Read, ""), "no key id"),
        (
            put("portal", ApiKeyRole::Creator, ""),
            "a creator key without creator",
        ),
        (
            put("dash-2", ApiKeyRole::Read, CREATOR),
            "a read key with a creator",
        ),
    ] {
        assert_eq!(
            code(admin.put_api_key(with_key(ADMIN_KEY, bad)).await),
            Some(Code::InvalidArgument),
            "{why}"
        );
    }

    // A read key and a creator key work on the ledger at once.
    let dash = admin
        .put_api_key(with_key(ADMIN_KEY, put("dash-2", ApiKeyRole::Read, "")))
        .await?
        .into_inner();
    assert_eq!(dash.key_id, "dash-2");
    assert!(dash.secret.len() >= 32, "a long random secret");
    assert_eq!(
        code(
            admin
                .put_api_key(with_key(ADMIN_KEY, put("dash-2", ApiKeyRole::Read, "")))
                .await
        ),
        Some(Code::FailedPrecondition),
        "a key id in use"
    );
    let portal = admin
        .put_api_key(with_key(
            ADMIN_KEY,
            put("anna-portal", ApiKeyRole::Creator, CREATOR),
        ))
        .await?
        .into_inner();
    assert_ne!(portal.secret, dash.secret);
    let balance = |creator: &str| v1::GetBalanceRequest {
        creator_id: creator.into(),
        ..Default::default()
    };
    let anna = client
        .get_balance(with_key(&dash.secret, balance(CREATOR)))
        .await?
        .into_inner();
    assert!(!anna.currencies.is_empty(), "the new read key sees anna");
    assert!(
        client
            .get_balance(with_key(&dash.secret, balance("ben")))
            .await
            .is_ok(),
        "the new read key sees the whole tenant"
    );
    assert!(
        client
            .get_balance(with_key(&portal.secret, balance(CREATOR)))
            .await
            .is_ok()
    );
    assert_eq!(
        client
            .get_balance(with_key(&portal.secret, balance("ben")))
            .await
            .err()
            .map(|s| s.code()),
        Some(Code::NotFound),
        "the new creator key sees only anna"
    );

    // An ingest key reaches ingest, another service, through the topic.
    let shop = admin
        .put_api_key(with_key(ADMIN_KEY, put("shop-2", ApiKeyRole::Ingest, "")))
        .await?
        .into_inner();
    let shutdown = CancellationToken::new();
    let ingest = payoff_ingest::bind(
        payoff_ingest::Config::try_parse_from([
            "payoff-ingest",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--kafka-brokers",
            &setup.brokers,
            "--topic-prefix",
            &setup.prefix,
            "--api-keys",
            &setup.keys.path().display().to_string(),
            "--pii-secret",
            "pii",
            "--log-format",
            "text",
        ])?,
        shutdown.clone(),
    )
    .await?;
    let addr = ingest.grpc_addr;
    let serving = tokio::spawn(ingest.serve());
    let mut ingest = IngestClient::new(
        Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?,
    );
    let now = Timestamp(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?);
    let send = |n: u32| v1::SendRequest {
        event: Some(v1::Event {
            event_id: format!("api-key-click-{n}"),
            occurred_at: Some(to_timestamp(now)),
            payload: Some(Payload::Click(v1::Click {
                visitor_id: "api-key-visitor".into(),
                link_code: "no-such-link".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    // Read to its end at startup: the key issued before ingest started works at once.
    ingest.send(with_key(&shop.secret, send(1))).await?;
    // Revoked: refused by the ledger at once and by ingest shortly after.
    admin
        .revoke_api_key(with_key(
            ADMIN_KEY,
            v1::RevokeApiKeyRequest {
                key_id: "shop-2".into(),
            },
        ))
        .await?;
    let mut n = 2;
    loop {
        match ingest.send(with_key(&shop.secret, send(n))).await {
            Err(s) if s.code() == Code::Unauthenticated => break,
            Ok(_) => {}
            Err(s) => bail!("ingest after the revocation: {s:?}"),
        }
        if Instant::now() > deadline {
            bail!("ingest still takes the revoked key");
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        admin
            .revoke_api_key(with_key(
                ADMIN_KEY,
                v1::RevokeApiKeyRequest {
                    key_id: "shop-2".into(),
                },
            ))
            .await
            .err()
            .map(|s| s.code()),
        Some(Code::NotFound),
        "revoking a revoked key"
    );
    admin
        .revoke_api_key(with_key(
            ADMIN_KEY,
            v1::RevokeApiKeyRequest {
                key_id: "dash-2".into(),
            },
        ))
        .await?;
    assert_eq!(
        client
            .get_balance(with_key(&dash.secret, balance(CREATOR)))
            .await
            .err()
            .map(|s| s.code()),
        Some(Code::Unauthenticated),
        "a revoked read key"
    );
    // Still issued: the creator key. A revoked id may be issued again, with a new secret.
    assert!(
        client
            .get_balance(with_key(&portal.secret, balance(CREATOR)))
            .await
            .is_ok()
    );
    let again = admin
        .put_api_key(with_key(ADMIN_KEY, put("dash-2", ApiKeyRole::Read, "")))
        .await?
        .into_inner();
    assert_ne!(again.secret, dash.secret);
    assert!(
        client
            .get_balance(with_key(&again.secret, balance(CREATOR)))
            .await
            .is_ok()
    );
    shutdown.cancel();
    serving.await??;
    Ok(())
}

/// `Admin`: program versions (optimistic concurrency, validation), and payouts that
/// become ledger entries exactly once.
async fn assert_admin(
    ledger: &LedgerProcess,
    scenario: &Scenario,
    report: &payoff_core::engine::Report,
    deadline: Instant,
) -> Result<()> {
    use payoff_proto::v1::admin_client::AdminClient;
    use tonic::Code;
    let channel = ledger.channel().await?;
    let mut admin = AdminClient::new(channel);
    let put = |version: u64, program: v1::Program| v1::PutProgramRequest {
        program: Some(v1::Program { version, ..program }),
    };
    // Only admin keys.
    let denied = admin
        .put_program(authorized(put(0, scenario.program.clone())))
        .await;
    assert_eq!(denied.err().map(|s| s.code()), Some(Code::PermissionDenied));
    // A stale expected version, then an invalid program, then a good one.
    let stale = admin
        .put_program(with_key(ADMIN_KEY, put(7, scenario.program.clone())))
        .await;
    assert_eq!(
        stale.err().map(|s| s.code()),
        Some(Code::FailedPrecondition)
    );
    let mut broken = scenario.program.clone();
    broken.campaigns[0].currency = "NOPE".into();
    let invalid = admin.put_program(with_key(ADMIN_KEY, put(0, broken))).await;
    assert_eq!(invalid.err().map(|s| s.code()), Some(Code::InvalidArgument));
    let put2 = admin
        .put_program(with_key(ADMIN_KEY, put(2, scenario.program.clone())))
        .await?
        .into_inner();
    assert_eq!(put2.version, 2);
    loop {
        let list = admin
            .list_programs(with_key(ADMIN_KEY, v1::ListProgramsRequest::default()))
            .await?
            .into_inner();
        let versions: Vec<u64> = list.programs.iter().map(|p| p.version).collect();
        if versions == [2, 1] {
            break;
        }
        if Instant::now() > deadline {
            bail!("program versions listed: {versions:?}, want [2, 1]");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let latest = admin
        .get_program(with_key(ADMIN_KEY, v1::GetProgramRequest { version: None }))
        .await?
        .into_inner();
    assert_eq!(latest.program.map(|p| p.version), Some(2));

    // Payouts: p1 twice (idempotent), then p2; both before the attributor's progress.
    let last_event = scenario
        .core_events()
        .iter()
        .filter(|e| !e.id.as_str().starts_with("sentinel-"))
        .map(|e| e.occurred_at)
        .max()
        .context("events")?;
    let payout = |id: &str, amount: &str, at: Timestamp| v1::RecordPayoutRequest {
        payout_id: id.into(),
        creator_id: CREATOR.into(),
        campaign_id: "spring-glow".into(),
        amount: Some(v1::Money {
            amount: amount.into(),
            currency: "USD".into(),
        }),
        paid_at: Some(to_timestamp(at)),
        note: "bank transfer".into(),
    };
    let first = payout(
        "transfer-1",
        "10.00",
        last_event.plus(payoff_core::time::Duration::hours(1)),
    );
    let entry = admin
        .record_payout(with_key(ADMIN_KEY, first.clone()))
        .await?
        .into_inner()
        .entry
        .context("entry")?;
    assert_eq!(
        entry.amount.as_ref().map(|m| m.amount.as_str()),
        Some("-10.00")
    );
    admin.record_payout(with_key(ADMIN_KEY, first)).await?;
    admin
        .record_payout(with_key(
            ADMIN_KEY,
            payout(
                "transfer-2",
                "5.00",
                last_event.plus(payoff_core::time::Duration::hours(2)),
            ),
        ))
        .await?;
    let want = report
        .balances
        .iter()
        .find(|b| b.creator.as_str() == CREATOR && b.currency.code() == "USD")
        .context("anna's USD balance")?;
    let mut client = ledger.client().await?;
    loop {
        let b = client
            .get_balance(authorized(v1::GetBalanceRequest {
                creator_id: CREATOR.into(),
                campaign_id: String::new(),
                as_of: Some(to_timestamp(report.as_of)),
            }))
            .await?
            .into_inner();
        let usd = b
            .currencies
            .iter()
            .find(|c| c.currency == "USD")
            .context("USD")?;
        if decimal(usd.paid.as_ref()) == Decimal::new(15, 0) {
            assert_eq!(
                decimal(usd.available.as_ref()),
                (want.available.amount - Decimal::new(15, 0)).normalize()
            );
            break;
        }
        if Instant::now() > deadline {
            bail!("anna's paid balance is {:?}, want 15", usd.paid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = client
        .list_entries(authorized(v1::ListEntriesRequest {
            creator_id: CREATOR.into(),
            page_size: 1000,
            ..Default::default()
        }))
        .await?
        .into_inner();
    let payouts = entries
        .entries
        .iter()
        .filter(|e| e.kind == v1::EntryKind::Payout as i32)
        .count();
    assert_eq!(payouts, 2, "each payout booked once");
    Ok(())
}

/// Tenant and creator isolation, no key, wrong role (§11).
async fn assert_scopes(ledger: &LedgerProcess, report: &payoff_core::engine::Report) -> Result<()> {
    use tonic::Code;
    let mut client = ledger.client().await?;
    let balance = |creator: &str| v1::GetBalanceRequest {
        creator_id: creator.into(),
        campaign_id: String::new(),
        as_of: Some(to_timestamp(report.as_of)),
    };
    let code = |r: Result<tonic::Response<v1::Balance>, tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(
            client
                .get_balance(tonic::Request::new(balance(CREATOR)))
                .await
        ),
        Some(Code::Unauthenticated),
        "no key"
    );
    assert_eq!(
        code(
            client
                .get_balance(with_key("nobody-issued-this", balance(CREATOR)))
                .await
        ),
        Some(Code::Unauthenticated),
        "unknown key"
    );
    assert_eq!(
        code(
            client
                .get_balance(with_key(INGEST_KEY, balance(CREATOR)))
                .await
        ),
        Some(Code::PermissionDenied),
        "ingest key"
    );
    // Another tenant sees nothing of this one.
    let other = client
        .get_balance(with_key(OTHER_TENANT_KEY, balance(CREATOR)))
        .await?
        .into_inner();
    assert!(
        other.currencies.is_empty(),
        "another tenant's key sees no balance: {other:?}"
    );
    let orders = |creator_has: bool| {
        let mut by_order: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for e in &report.entries {
            if let Some(o) = &e.entry.order {
                by_order
                    .entry(o.as_str().to_owned())
                    .or_default()
                    .insert(e.entry.creator.as_str().to_owned());
            }
        }
        by_order
            .into_iter()
            .find(|(_, cs)| cs.contains(CREATOR) == creator_has)
            .map(|(o, _)| o)
    };
    let (own_order, others_order) = (
        orders(true).context("an order of anna")?,
        orders(false).context("an order of others")?,
    );
    let explain = |o: &str| v1::ExplainOrderRequest { order_id: o.into() };
    assert!(
        client
            .explain_order(authorized(explain(&others_order)))
            .await
            .is_ok(),
        "the tenant's read key explains any order"
    );
    let e = client
        .explain_order(with_key(OTHER_TENANT_KEY, explain(&own_order)))
        .await;
    assert_eq!(
        e.err().map(|s| s.code()),
        Some(Code::NotFound),
        "another tenant's order"
    );
    // A creator key: its own balance, nobody else's.
    let mine = client
        .get_balance(with_key(CREATOR_KEY, balance("")))
        .await?
        .into_inner();
    let want: Vec<_> = report
        .balances
        .iter()
        .filter(|b| b.creator.as_str() == CREATOR)
        .collect();
    assert_eq!(mine.currencies.len(), want.len());
    for (got, want) in mine.currencies.iter().zip(&want) {
        assert_eq!(
            decimal(got.available.as_ref()),
            want.available.amount.normalize(),
            "anna's available balance"
        );
    }
    assert_eq!(
        code(
            client
                .get_balance(with_key(CREATOR_KEY, balance("ben")))
                .await
        ),
        Some(Code::NotFound),
        "another creator's balance"
    );
    let listed = client
        .list_entries(with_key(
            CREATOR_KEY,
            v1::ListEntriesRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert!(
        !listed.entries.is_empty() && listed.entries.iter().all(|e| e.creator_id == CREATOR),
        "a creator key lists only its entries"
    );
    let e = client
        .explain_order(with_key(CREATOR_KEY, explain(&others_order)))
        .await;
    assert_eq!(
        e.err().map(|s| s.code()),
        Some(Code::NotFound),
        "an order anna has no part in"
    );
    let own = client
        .explain_order(with_key(CREATOR_KEY, explain(&own_order)))
        .await?
        .into_inner();
    assert!(
        own.entries.iter().all(|e| e.creator_id == CREATOR)
            && own.credits.iter().all(|c| c.creator_id == CREATOR)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_and_restarted_the_ledger_is_still_exact() -> Result<()> {
    let scenario = scenario::generate(Options {
        seed: 22,
        visitors: 600,
        sentinels: 60,
    });
    let report = oracle(&scenario, as_of(&scenario));
    let setup = Setup::new("ledger-kill", &scenario).await?;
    setup.start_attributor()?;
    let group = fixture::unique_name("ledger");
    let deadline = Instant::now() + DEADLINE;
    // Kill it as soon as it has written something, twice.
    // A killed member holds its partitions until its session times out: the broker's
    // minimum (6 s) keeps the restarts quick.
    let quick = ["--session-timeout", "6s"];
    for round in 0..2 {
        let mut ledger = setup.start_ledger_with(&group, &quick, None)?;
        let mut client = ledger.client().await?;
        let creators: Vec<String> = report
            .balances
            .iter()
            .map(|b| b.creator.as_str().to_owned())
            .collect();
        loop {
            let got = balances(&mut client, &creators, report.as_of).await?;
            if !got.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("round {round}: the ledger wrote nothing before the deadline");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ledger.kill()?;
    }
    let ledger = setup.start_ledger_with(&group, &quick, None)?;
    until_balances_equal(&ledger, &report, deadline).await?;
    assert_queries_equal(&ledger, &report).await?;

    // `payoff ledger rebuild` into a new keyspace gives the same rows, table by table.
    let session = cql::connect(&CqlSettings::new(fixture::cql_nodes())).await?;
    let rebuilt = format!("{}_rebuilt", setup.keyspace);
    cql::create_keyspace(&session, &rebuilt, &Replication::Simple { factor: 1 }).await?;
    schema::migrate(&session, &rebuilt).await?;
    let what = payoff_ledger::rebuild::Rebuild {
        kafka_brokers: setup.brokers.clone(),
        scylla_nodes: fixture::cql_nodes().join(","),
        keyspace: rebuilt.clone(),
        topic_prefix: setup.prefix.clone(),
        group_id: group.clone(),
    };
    let report = payoff_ledger::rebuild::rebuild(&what, |_, _| {}).await?;
    assert_eq!(report.len(), PARTITIONS as usize);
    for table in [
        "entries_by_creator",
        "entries_by_campaign",
        "order_entries",
        "order_credits",
        "tier_changes",
        "kpi_deltas",
        "creator_months",
        "campaign_months",
        "fold_progress",
    ] {
        let live = rows(&session, &setup.keyspace, table).await?;
        let again = rows(&session, &rebuilt, table).await?;
        assert!(!live.is_empty(), "{table} is empty");
        assert_eq!(live, again, "{table} after rebuild");
    }
    Ok(())
}

/// Every row of a table, as text, sorted.
async fn rows(
    session: &scylla::client::session::Session,
    keyspace: &str,
    table: &str,
) -> Result<Vec<String>> {
    use futures::TryStreamExt as _;
    let mut out: Vec<String> = session
        .query_iter(format!("SELECT * FROM {keyspace}.{table}"), ())
        .await?
        .rows_stream::<scylla::value::Row>()?
        .map_ok(|row| format!("{:?}", row.columns))
        .try_collect()
        .await?;
    out.sort();
    Ok(out)
}

/// The worked numbers of SPEC §9 through ingest's topics, the attributor and the ledger:
/// 100 clicks and 10 orders is a 10% conversion rate; 10% of an $80 order is $8.00;
/// $500 cost and $2,000 revenue is ROAS 4 and ROI 300%; $500 for 25 orders is a $20 CPA;
/// $2,000 revenue on 100,000 views (an engagement snapshot, passed on by the attributor)
/// is a $20 RPM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worked_numbers_of_section_9_come_out_exactly() -> Result<()> {
    use serde_json::json;
    let program: v1::Program = serde_json::from_value(json!({
        "tenantId": scenario::TENANT, "version": "1", "effectiveFrom": "2026-01-01T00:00:00Z",
        "settings": {"gracePeriod": "10s", "clickFloodLimitPerMinute": 30, "minClickToConversion": "3s"},
        "campaigns": [
            {"id": "ten-percent", "currency": "USD", "model": "ATTRIBUTION_MODEL_LAST_CLICK", "lookback": "2592000s",
             "plans": [{"id": "rev", "cpsPercent": {"rate": "0.10"}, "hold": "0s"}]},
            {"id": "quarter", "currency": "USD", "model": "ATTRIBUTION_MODEL_LAST_CLICK", "lookback": "2592000s",
             "plans": [{"id": "rev", "cpsPercent": {"rate": "0.25"}, "hold": "0s"}]}
        ],
        "creators": [{"id": "zoe", "displayName": "Zoe"}, {"id": "yan", "displayName": "Yan"}],
        "links": [
            {"code": "zoe-ten", "creatorId": "zoe", "campaignId": "ten-percent", "landingUrl": "https://shop.example/"},
            {"code": "yan-quarter", "creatorId": "yan", "campaignId": "quarter", "landingUrl": "https://shop.example/"}
        ]
    }))?;
    let at = |sec: i64| Timestamp(1_793_000_000_000 + sec * 1_000).to_string();
    let mut events = Vec::new();
    // 100 visitors click Zoe's link; 10 of them order $80.
    for v in 0..100 {
        let visitor = format!("ten-{v:03}");
        events.push(
            json!({"eventId": format!("click-{visitor}"), "occurredAt": at(v * 60),
            "context": {"ip": format!("198.51.100.{}", v + 1)},
            "click": {"visitorId": visitor, "linkCode": "zoe-ten"}}),
        );
        if v % 10 == 0 {
            events.push(json!({"eventId": format!("order-{visitor}"), "occurredAt": at(v * 60 + 30),
                "order": {"visitorId": visitor, "orderId": format!("o-{visitor}"), "amount": {"amount": "80.00", "currency": "USD"}}}));
        }
    }
    // 25 visitors click Yan's link and order $80: $2,000 revenue, 25% is $500 cost.
    for v in 0..25 {
        let visitor = format!("quarter-{v:03}");
        events.push(
            json!({"eventId": format!("click-{visitor}"), "occurredAt": at(7_000 + v * 60),
            "context": {"ip": format!("203.0.113.{}", v + 1)},
            "click": {"visitorId": visitor, "linkCode": "yan-quarter"}}),
        );
        events.push(json!({"eventId": format!("order-{visitor}"), "occurredAt": at(7_000 + v * 60 + 30),
            "order": {"visitorId": visitor, "orderId": format!("o-{visitor}"), "amount": {"amount": "80.00", "currency": "USD"}}}));
    }
    // Yan's post: 100,000 views (cumulative snapshots: the later one counts).
    for (n, views) in [(1, 40_000), (2, 100_000)] {
        events.push(
            json!({"eventId": format!("views-{n}"), "occurredAt": at(9_000 + n),
            "engagement": {"creatorId": "yan", "campaignId": "quarter", "postId": "yan-post",
                           "platform": "instagram", "views": views.to_string()}}),
        );
    }
    // Sentinels move every partition's watermark past the rest.
    for s in 0..60 {
        events.push(
            json!({"eventId": format!("sentinel-{s}"), "occurredAt": at(100_000),
            "click": {"visitorId": format!("sentinel-{s}"), "linkCode": "no-such-link"}}),
        );
    }
    let events = events
        .into_iter()
        .map(|j| {
            let mut e: v1::Event = serde_json::from_value(j)?;
            e.tenant_id = scenario::TENANT.to_owned();
            Ok(e)
        })
        .collect::<Result<Vec<_>>>()?;
    let worked = Scenario { program, events };
    let setup = Setup::new("ledger-worked", &worked).await?;
    let ledger = setup.start_ledger(&fixture::unique_name("ledger"))?;
    let deadline = Instant::now() + DEADLINE;
    ledger.serving(deadline).await?;
    setup.start_attributor()?;
    let mut client = ledger.client().await?;
    let kpis = async |client: &mut LedgerClient<Channel>, campaign: &str| -> Result<v1::Kpis> {
        let got = client
            .get_campaign_kpis(authorized(v1::GetCampaignKpisRequest {
                campaign_id: campaign.into(),
                range: None,
                creator_id: String::new(),
            }))
            .await?
            .into_inner();
        got.total.context("total")
    };
    // Wait until both campaigns have all their orders.
    loop {
        let ten = kpis(&mut client, "ten-percent").await?;
        let quarter = kpis(&mut client, "quarter").await?;
        if ten.credited_orders == 10 && quarter.credited_orders == 25 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "orders credited: {} and {}, want 10 and 25",
                ten.credited_orders,
                quarter.credited_orders
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ten = kpis(&mut client, "ten-percent").await?;
    assert_eq!(ten.unique_clicks, 100);
    assert_eq!(
        ten.conversion_rate.as_deref(),
        Some("0.1"),
        "100 clicks and 10 orders"
    );
    let zoe = client
        .list_entries(authorized(v1::ListEntriesRequest {
            creator_id: "zoe".into(),
            page_size: 100,
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(zoe.entries.len(), 10);
    assert!(
        zoe.entries
            .iter()
            .all(|e| e.amount.as_ref().map(|m| m.amount.as_str()) == Some("8.00")),
        "10% of an $80 order is $8.00"
    );
    let quarter = kpis(&mut client, "quarter").await?;
    assert_eq!(decimal(quarter.revenue.as_ref()), Decimal::new(2_000, 0));
    assert_eq!(decimal(quarter.cost.as_ref()), Decimal::new(500, 0));
    assert_eq!(quarter.roas.as_deref(), Some("4"), "ROAS");
    assert_eq!(quarter.roi.as_deref(), Some("3"), "ROI 300%");
    assert_eq!(quarter.cpa.as_deref(), Some("20"), "CPA");
    assert_eq!(quarter.aov.as_deref(), Some("80"), "AOV");
    assert_eq!(quarter.views, 100_000);
    assert_eq!(quarter.rpm.as_deref(), Some("20"), "RPM");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_ledger_answers_queries_health_and_reflection() -> Result<()> {
    let scenario = scenario::generate(Options {
        seed: 24,
        visitors: 60,
        // Enough to reach every partition: each releases its held tail.
        sentinels: 60,
    });
    let report = oracle(&scenario, as_of(&scenario));
    let setup = Setup::new("ledger-tls", &scenario).await?;
    let dir = tempfile::tempdir()?;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &cert_pem)?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let ledger = setup.start_ledger_with(
        &fixture::unique_name("ledger"),
        &["--tls-cert", &cert, "--tls-key", &key],
        Some(&cert_pem),
    )?;
    let deadline = Instant::now() + DEADLINE;
    // Health over TLS, then every balance as replay computes it.
    ledger.serving(deadline).await?;
    setup.start_attributor()?;
    until_balances_equal(&ledger, &report, deadline).await?;

    // A plaintext client gets no answer from the TLS listener.
    let plain = Channel::from_shared(format!("http://{}", ledger.grpc))?
        .connect()
        .await;
    if let Ok(channel) = plain {
        let answer = LedgerClient::new(channel)
            .get_balance(authorized(v1::GetBalanceRequest {
                creator_id: CREATOR.into(),
                ..Default::default()
            }))
            .await;
        assert!(answer.is_err(), "plaintext answered: {answer:?}");
    }

    // A client nobody here wrote: grpcurl lists the services through reflection, over
    // TLS, trusting the certificate, and calls a query.
    let list = tokio::process::Command::new(fixture::grpcurl())
        .args([
            "-cacert",
            &cert,
            "-authority",
            "localhost",
            &ledger.grpc,
            "list",
        ])
        .output()
        .await
        .context("run grpcurl")?;
    let services = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success()
            && [
                "payoff.v1.Ledger",
                "payoff.v1.Admin",
                "grpc.health.v1.Health"
            ]
            .iter()
            .all(|s| services.contains(s)),
        "grpcurl list: {services} {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let call = tokio::process::Command::new(fixture::grpcurl())
        .args([
            "-cacert",
            &cert,
            "-authority",
            "localhost",
            "-H",
            &format!("authorization: Bearer {READ_KEY}"),
            "-d",
            &format!(r#"{{"creatorId":"{CREATOR}"}}"#),
            &ledger.grpc,
            "payoff.v1.Ledger/GetBalance",
        ])
        .output()
        .await?;
    assert!(
        call.status.success(),
        "grpcurl GetBalance: {}",
        String::from_utf8_lossy(&call.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&call.stdout)?;
    assert_eq!(answer["creatorId"], CREATOR);
    Ok(())
}
