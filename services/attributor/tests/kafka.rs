//! The attributor against the real Kafka, as a process (so it can be killed with
//! SIGKILL): the credits topic must hold exactly the credits `Engine` (what `payoff
//! replay` runs) gives for the same events, through kill -9 mid-stream, through a second
//! instance leaving the group, with late clicks and with poison records.
//!
//! Every wait is a poll with a deadline; nothing sleeps.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use payoff_adapters::{
    kafka::{self as adapters, StartFrom},
    progress,
    topology::{self, Topics},
};
use payoff_core::credit::Credit;
use payoff_proto::{convert::credit_from_proto, v1};
use payoff_tests::{
    fixture,
    scenario::{self, Options, Scenario},
};
use prost::Message as _;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Headers,
    producer::{FutureProducer, FutureRecord},
};

const PARTITIONS: i32 = 4;

/// The tests of this file run one at a time: each runs attributor processes and Kafka on
/// a 2-core machine, and the equality they check needs the merge not to be starved.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const DEADLINE: Duration = Duration::from_secs(180);

/// Topics, a group and the brokers of one test.
struct Setup {
    brokers: String,
    prefix: String,
    topics: Topics,
    group: String,
}

impl Setup {
    async fn new(name: &str) -> Result<Self> {
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
        Ok(Self {
            brokers,
            group: fixture::unique_name("attributor"),
            prefix,
            topics,
        })
    }

    fn producer(&self) -> Result<FutureProducer> {
        let mut config = adapters::base_config(&self.brokers, "attributor-test")?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", topology::PARTITIONER);
        Ok(config.create()?)
    }

    async fn publish_program(&self, scenario: &Scenario) -> Result<()> {
        let key = topology::key(&[scenario::TENANT, "1"]);
        let payload = scenario.program.encode_to_vec();
        self.producer()?
            .send(
                FutureRecord::to(&self.topics.programs)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .context("publish program")?;
        Ok(())
    }

    /// Produces records in order (one idempotent producer keeps each partition's order).
    async fn produce(&self, records: &[(String, String, Vec<u8>)]) -> Result<()> {
        let producer = self.producer()?;
        let mut deliveries = Vec::with_capacity(records.len());
        for (topic, key, payload) in records {
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
        Ok(())
    }

    fn scenario_records(&self, scenario: &Scenario) -> Vec<(String, String, Vec<u8>)> {
        scenario
            .records(&self.topics)
            .into_iter()
            .map(|(t, k, e)| (t, k, e.encode_to_vec()))
            .collect()
    }

    fn start(&self, instance: &str) -> Result<Attributor> {
        self.start_with(instance, &[])
    }

    fn start_with(&self, instance: &str, extra: &[&str]) -> Result<Attributor> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_payoff-attributor"))
            .args([
                "--kafka-brokers",
                &self.brokers,
                "--topic-prefix",
                &self.prefix,
                "--group-id",
                &self.group,
                "--instance-id",
                instance,
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--correction-wait",
                "3650days",
                "--transaction-timeout",
                "10s",
                // The merge's wall-clock fallback would let a slow fetch on a loaded test
                // machine reorder inputs beyond the grace; equality needs the merge to
                // wait for every input.
                "--max-idle",
                "120s",
                // Chunks produced between kills and restarts are one stream: a quiet
                // spell between them must not release the tail early (the quiet release
                // is tested on live traffic by payoff-cli's tests/dev.rs).
                "--quiet-release",
                "1000h",
                "--log-format",
                "json",
                "--log",
                "info",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start payoff-attributor")?;
        // Log lines (JSON) are searched for the listening addresses; warnings and errors
        // are passed on to the test's output (every line with ATTRIBUTOR_TEST_LOGS set).
        let stdout = child.stdout.take().context("stdout")?;
        let (lines, rx) = std::sync::mpsc::channel();
        let name = instance.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if std::env::var_os("ATTRIBUTOR_TEST_LOGS").is_some()
                    || line.contains("\"level\":\"WARN\"")
                    || line.contains("\"level\":\"ERROR\"")
                {
                    eprintln!("[{name}] {line}");
                }
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Attributor { child, lines: rx })
    }

    /// Every committed credit, decoded, sorted by id.
    fn credits(&self, at_least: usize, deadline: Instant) -> Result<Vec<Credit>> {
        // Short of the count at the deadline: compare what is there (the difference says
        // more than a count).
        let values = match read_all(&self.brokers, &self.topics.credits, at_least, deadline) {
            Ok(values) => values,
            Err(e) => {
                eprintln!("{e:#}");
                read_all(
                    &self.brokers,
                    &self.topics.credits,
                    0,
                    Instant::now() + Duration::from_secs(30),
                )?
            }
        };
        let mut credits = values
            .iter()
            .map(|(_, v)| {
                let proto = v1::Credit::decode(v.as_slice())?;
                let (_, credit) = credit_from_proto(&proto).map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(credit)
            })
            .collect::<Result<Vec<_>>>()?;
        credits.sort_by_key(|c| c.id);
        Ok(credits)
    }
}

/// A running attributor process.
struct Attributor {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Attributor {
    /// The gRPC health address it logged.
    fn health_addr(&self, deadline: Instant) -> Result<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .context("no \"attributor listening\" log line before the deadline")?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "attributor listening"
            {
                return v["health"]
                    .as_str()
                    .map(str::to_owned)
                    .context("no health field");
            }
        }
    }

    /// Waits until health says SERVING (state restored, records flowing).
    async fn serving(&self, deadline: Instant) -> Result<()> {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let addr = self.health_addr(deadline)?;
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut client = HealthClient::new(channel);
        let mut updates = client
            .watch(HealthCheckRequest {
                service: payoff_attributor::HEALTH_SERVICE.to_owned(),
            })
            .await?
            .into_inner();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let update = tokio::time::timeout(left, updates.message())
                .await
                .context("not serving before the deadline")??
                .context("health watch ended")?;
            if update.status() == ServingStatus::Serving {
                return Ok(());
            }
        }
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status()?;
        ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }

    fn kill9(mut self) -> Result<()> {
        self.child.kill().context("SIGKILL")?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> Result<()> {
        self.signal("-TERM")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "attributor exited with {status}");
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "attributor did not stop within 60 s"
            );
            // Polling a child process: there is no event to wait on.
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }
}

impl Drop for Attributor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record read back: its headers and value.
type Read = (BTreeMap<String, String>, Vec<u8>);

/// Reads a topic (read_committed) from the beginning until at least `at_least` records
/// and the end of every partition; returns (headers, value) per record.
fn read_all(brokers: &str, topic: &str, at_least: usize, deadline: Instant) -> Result<Vec<Read>> {
    let mut config: ClientConfig = adapters::read_committed_consumer_config(
        brokers,
        &fixture::unique_name("reader"),
        StartFrom::Earliest,
    )?;
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer<payoff_adapters::kafka::QuietEof> =
        config.create_with_context(payoff_adapters::kafka::QuietEof)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut at_end = [false; PARTITIONS as usize];
    loop {
        if out.len() >= at_least && at_end.iter().all(|e| *e) {
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!(
                "{topic}: {} records before the deadline, wanted at least {at_least}",
                out.len()
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end[m.partition() as usize] = false;
                let headers: BTreeMap<String, String> = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                // The attributor's progress markers and the engagement it passes on (for
                // the ledger) are not credits.
                if headers.contains_key(progress::HEADER)
                    || headers.contains_key(payoff_adapters::topology::INPUT_HEADER)
                {
                    continue;
                }
                out.push((headers, m.payload().unwrap_or_default().to_vec()));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
}

fn describe(credits: &[Credit]) -> BTreeMap<&'static str, usize> {
    let mut kinds = BTreeMap::new();
    for c in credits {
        *kinds.entry(c.kind.name()).or_default() += 1;
    }
    kinds
}

/// Asserts equality with a readable difference.
fn assert_same(got: &[Credit], want: &[Credit]) {
    if got == want {
        return;
    }
    let missing: Vec<_> = want.iter().filter(|c| !got.contains(c)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|c| !want.contains(c)).take(5).collect();
    panic!(
        "credits differ: got {} {:?}, want {} {:?}\nmissing (first 5): {missing:#?}\nextra (first 5): {extra:#?}",
        got.len(),
        describe(got),
        want.len(),
        describe(want)
    );
}

/// The scenario's events, all in Kafka before one attributor (with `flags`) starts: its
/// credits equal the replay's, and still do after it stops.
async fn a_backlog_gives_the_replays_credits(
    name: &str,
    options: Options,
    flags: &[&str],
) -> Result<()> {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new(name).await?;
    let scenario = scenario::generate(options);
    let want = scenario.oracle();
    setup.publish_program(&scenario).await?;
    setup.produce(&setup.scenario_records(&scenario)).await?;
    let attributor = setup.start_with(&format!("{name}-0"), flags)?;
    let deadline = Instant::now() + DEADLINE;
    attributor.serving(deadline).await?;
    let got = setup.credits(want.len(), deadline)?;
    attributor.stop()?;
    let after_stop = setup.credits(want.len(), deadline)?;
    assert_same(&got, &want);
    assert_same(&after_stop, &want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_equal_the_replay_of_the_same_events() -> Result<()> {
    a_backlog_gives_the_replays_credits("attr-eq", Options::default(), &[]).await
}

/// A backlog with a small `--max-held-events`: the sparse inputs (signups, orders,
/// corrections) are fetched far ahead of the clicks of the same hours; were they all
/// decoded and held, the limit would be passed and the merge would go on without the
/// clicks, crediting conversions before the clicks that earned them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_under_a_small_hold_limit_gives_the_same_credits() -> Result<()> {
    // Enough clicks per partition (about 10,000) that they take several fetches and
    // turns, while each sparse input arrives in one.
    let options = Options {
        visitors: 20_000,
        ..Options::default()
    };
    a_backlog_gives_the_replays_credits("attr-held", options, &["--max-held-events", "70"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_doubles_nothing() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("attr-kill").await?;
    let scenario = scenario::generate(Options {
        seed: 11,
        ..Options::default()
    });
    let want = scenario.oracle();
    setup.publish_program(&scenario).await?;
    let records = setup.scenario_records(&scenario);
    let chunks = 4;
    let size = records.len().div_ceil(chunks);
    let deadline = Instant::now() + DEADLINE;
    // Produce a quarter, let the attributor get going, kill it, produce the next, restart.
    for (i, chunk) in records.chunks(size).enumerate() {
        setup.produce(chunk).await?;
        // A killed member stays in the group until its session times out, and the
        // restarted one gets no partitions before that: the broker's minimum (6 s) keeps
        // three kills well inside the deadline (45 s each, the default, did not on CI).
        let attributor = setup.start_with("kill-0", &["--session-timeout", "6s"])?;
        if i + 1 < chunks {
            // Wait until it has committed something new, then kill it mid-stream.
            let seen = read_all(&setup.brokers, &setup.topics.credits, 0, deadline)?.len();
            let target = seen + 1;
            read_all(&setup.brokers, &setup.topics.credits, target, deadline)?;
            attributor.kill9()?;
        } else {
            let got = setup.credits(want.len(), deadline)?;
            attributor.stop()?;
            assert_same(&got, &want);
        }
    }
    let got = setup.credits(want.len(), deadline)?;
    assert_same(&got, &want);
    Ok(())
}

/// Every input is in Kafka before either instance reads it: the attributor's credits
/// equal the replay's when the merge sees every input (a live producer that writes a
/// month of event time within a second can leave one topic behind another by far more
/// than the grace period, which no event-time merge can undo; see ARCHITECTURE.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_leaving_moves_its_partitions_with_their_state() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("attr-two").await?;
    let scenario = scenario::generate(Options {
        seed: 23,
        ..Options::default()
    });
    let want = scenario.oracle();
    setup.publish_program(&scenario).await?;
    setup.produce(&setup.scenario_records(&scenario)).await?;
    let a = setup.start("two-a")?;
    let b = setup.start("two-b")?;
    let deadline = Instant::now() + DEADLINE;
    // Both own partitions (b restored its share), and some credits are committed: then b
    // leaves mid-stream, and a takes b's partitions with the state b committed.
    b.serving(deadline).await?;
    read_all(
        &setup.brokers,
        &setup.topics.credits,
        want.len() / 4,
        deadline,
    )?;
    b.stop()?;
    let got = setup.credits(want.len(), deadline)?;
    a.stop()?;
    assert_same(&got, &want);
    Ok(())
}

/// A small hand-written stream: visitor `in` gets a click 30 s before its order that
/// arrives right after the order (within the grace); visitor `out` gets one 60 s before
/// its order that arrives after a newer click of the same visitor, 10 minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_click_counts_within_the_grace_period_and_not_after() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("attr-late").await?;
    let program = scenario::example_program();
    let scenario_program = Scenario {
        program: program.clone(),
        events: Vec::new(),
    };
    setup.publish_program(&scenario_program).await?;
    let click = |id: &str, at: &str, visitor: &str, link: &str| {
        serde_json::json!({"eventId": id, "occurredAt": at,
            "click": {"visitorId": visitor, "linkCode": link}})
    };
    let order = |id: &str, at: &str, visitor: &str| {
        serde_json::json!({"eventId": id, "occurredAt": at,
            "order": {"visitorId": visitor, "orderId": format!("order-{visitor}"),
                      "amount": {"amount": "100.00", "currency": "USD"}}})
    };
    let mut events = vec![
        click("c1", "2026-11-02T10:00:00Z", "in", "anna-spring"),
        order("o1", "2026-11-02T10:05:00Z", "in"),
        click("c2", "2026-11-02T10:04:30Z", "in", "ben-spring"),
        click("c3", "2026-11-02T11:00:00Z", "out", "anna-spring"),
        order("o2", "2026-11-02T11:05:00Z", "out"),
        click("c4", "2026-11-02T11:15:00Z", "out", "anna-spring"),
        click("c5", "2026-11-02T11:04:00Z", "out", "ben-spring"),
    ];
    for s in 0..200 {
        events.push(click(
            &format!("sentinel-{s}"),
            "2026-11-20T00:00:00Z",
            &format!("sentinel-{s}"),
            "no-such-link",
        ));
    }
    let events: Vec<v1::Event> = events
        .into_iter()
        .map(|j| {
            let mut e: v1::Event = serde_json::from_value(j)?;
            e.tenant_id = scenario::TENANT.to_owned();
            Ok(e)
        })
        .collect::<Result<_>>()?;
    let scenario = Scenario { program, events };
    let want = scenario.oracle();
    setup.produce(&setup.scenario_records(&scenario)).await?;
    let attributor = setup.start("late-0")?;
    let deadline = Instant::now() + DEADLINE;
    let got = setup.credits(want.len(), deadline)?;
    attributor.stop()?;
    assert_same(&got, &want);
    let order_credit = |visitor: &str| {
        got.iter()
            .find(|c| c.kind.name() == "order" && c.cause.as_str() == visitor)
            .map(|c| c.creator.as_str().to_owned())
    };
    assert_eq!(
        order_credit("o1").as_deref(),
        Some("ben"),
        "the click 30 s before the order, arriving within the grace, is the last click"
    );
    assert_eq!(
        order_credit("o2").as_deref(),
        Some("anna"),
        "the click that arrived after the grace does not count"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_and_processing_continues() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("attr-poison").await?;
    let scenario = scenario::generate(Options {
        seed: 5,
        visitors: 300,
        sentinels: 200,
    });
    let want = scenario.oracle();
    setup.publish_program(&scenario).await?;
    let mut no_tenant = scenario.events[0].clone();
    no_tenant.tenant_id.clear();
    let mut records = vec![
        (
            setup.topics.clicks.clone(),
            "poison".to_owned(),
            b"\xff\xfe not protobuf".to_vec(),
        ),
        (
            setup.topics.orders.clone(),
            "poison-2".to_owned(),
            no_tenant.encode_to_vec(),
        ),
    ];
    records.extend(setup.scenario_records(&scenario));
    setup.produce(&records).await?;
    let attributor = setup.start("poison-0")?;
    let deadline = Instant::now() + DEADLINE;
    let got = setup.credits(want.len(), deadline)?;
    let dead = read_all(&setup.brokers, &setup.topics.dead_letter, 2, deadline)?;
    attributor.stop()?;
    assert_same(&got, &want);
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|(h, _)| h.get("payoff-reason").map_or("", String::as_str))
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["no_tenant", "undecodable"]);
    assert!(
        dead.iter()
            .all(|(h, _)| h.contains_key("payoff-source-topic") && h.contains_key("payoff-detail")),
        "{dead:?}"
    );
    assert!(!dead[0].1.is_empty(), "the original bytes are kept");
    Ok(())
}

/// An instance that stops answering (SIGSTOP) loses its partitions to another after the
/// session timeout; when it wakes up it must not commit anything of what it held: the
/// credits still equal the replay exactly. Each half of the input is in Kafka before an
/// instance reads it (see `a_second_instance_leaving_moves_its_partitions_with_their_state`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_instance_is_fenced() -> Result<()> {
    let setup = Setup::new("attr-zombie").await?;
    let scenario = scenario::generate(Options {
        seed: 31,
        ..Options::default()
    });
    let want = scenario.oracle();
    setup.publish_program(&scenario).await?;
    let records = setup.scenario_records(&scenario);
    let (first, second) = records.split_at(records.len() / 2);
    let fast = ["--session-timeout", "6s"];
    setup.produce(first).await?;
    let zombie = setup.start_with("zombie-a", &fast)?;
    let deadline = Instant::now() + DEADLINE;
    zombie.serving(deadline).await?;
    read_all(&setup.brokers, &setup.topics.credits, 1, deadline)?;
    zombie.signal("-STOP")?;
    setup.produce(second).await?;
    let survivor = setup.start_with("zombie-b", &fast)?;
    // The survivor takes every partition once the zombie's session has expired (it can
    // then read everything the zombie committed; what the zombie left in an open
    // transaction holds read_committed readers back until that transaction ends).
    survivor.serving(deadline).await?;
    read_all(&setup.brokers, &setup.topics.order_index, 1, deadline)?;
    // Wake the zombie: it finds itself out of the group (its open transaction is
    // aborted or fenced) and must not add anything.
    zombie.signal("-CONT")?;
    let got = setup.credits(want.len(), deadline)?;
    let _ = zombie.stop();
    survivor.stop()?;
    assert_same(&got, &want);
    let got = setup.credits(want.len(), deadline)?;
    assert_same(&got, &want);
    Ok(())
}
