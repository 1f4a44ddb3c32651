//! The ingest service on in-memory adapters: validation table, auth, batches, duplicates.
//! (The same behaviour against real Kafka is tested in the `payoff-tests` package.)

mod common;

use std::sync::Arc;

use common::*;
use payoff_ingest::publisher::MemoryPublisher;
use payoff_proto::v1::{self, event::Payload, event_result::Status as ItemStatus};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt;

struct Running {
    addr: std::net::SocketAddr,
    publisher: MemoryPublisher,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), payoff_ingest::IngestError>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let bound = payoff_ingest::bind(config(&dir, "", "t."), shutdown.clone())
        .await
        .expect("bind");
    let addr = bound.grpc_addr;
    let publisher = MemoryPublisher::default();
    let task = tokio::spawn(bound.serve_with(Arc::new(publisher.clone())));
    Running {
        addr,
        publisher,
        shutdown,
        task,
        _dir: dir,
    }
}

fn with_payload(mut e: v1::Event, f: impl FnOnce(&mut Payload)) -> v1::Event {
    f(e.payload.as_mut().unwrap());
    e
}

fn order_with(f: impl FnOnce(&mut v1::Order)) -> v1::Event {
    with_payload(order("e-1", "v-1", "o-1", "80.00"), |p| {
        let Payload::Order(o) = p else { unreachable!() };
        f(o);
    })
}

fn money(amount: &str, currency: &str) -> Option<v1::Money> {
    Some(v1::Money {
        amount: amount.into(),
        currency: currency.into(),
    })
}

fn adjustment(kind: i32) -> v1::Event {
    v1::Event {
        event_id: "adj-1".into(),
        occurred_at: Some(now()),
        payload: Some(Payload::Adjustment(v1::Adjustment {
            order_id: "o-1".into(),
            kind,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The table of bad inputs: each must be refused with INVALID_ARGUMENT naming exactly
/// this field and rule, and nothing may be published.
fn bad_inputs() -> Vec<(&'static str, v1::Event, &'static str, &'static str)> {
    let far_future = pbjson_types::Timestamp {
        seconds: now().seconds + 600,
        nanos: 0,
    };
    vec![
        (
            "empty event id",
            v1::Event {
                event_id: String::new(),
                ..click("x", "v")
            },
            "event_id",
            "required",
        ),
        (
            "129-byte event id",
            v1::Event {
                event_id: "e".repeat(129),
                ..click("x", "v")
            },
            "event_id",
            "too_long",
        ),
        (
            "control character in event id",
            v1::Event {
                event_id: "e\u{0}1".into(),
                ..click("x", "v")
            },
            "event_id",
            "control_character",
        ),
        (
            "missing occurred_at",
            v1::Event {
                occurred_at: None,
                ..click("e", "v")
            },
            "occurred_at",
            "required",
        ),
        (
            "occurred_at 10 minutes in the future",
            v1::Event {
                occurred_at: Some(far_future),
                ..click("e", "v")
            },
            "occurred_at",
            "in_future",
        ),
        (
            "occurred_at in 1990",
            v1::Event {
                occurred_at: Some(pbjson_types::Timestamp {
                    seconds: 631_152_000,
                    nanos: 0,
                }),
                ..click("e", "v")
            },
            "occurred_at",
            "too_old",
        ),
        (
            "no payload",
            v1::Event {
                payload: None,
                ..click("e", "v")
            },
            "payload",
            "required",
        ),
        (
            "customer id with a newline",
            v1::Event {
                customer_id: "c\n1".into(),
                ..click("e", "v")
            },
            "customer_id",
            "control_character",
        ),
        (
            "click without visitor",
            click("e", ""),
            "click.visitor_id",
            "required",
        ),
        (
            "click visitor of 129 bytes",
            click("e", &"v".repeat(129)),
            "click.visitor_id",
            "too_long",
        ),
        (
            "click without link or creator",
            with_payload(click("e", "v"), |p| {
                let Payload::Click(c) = p else { unreachable!() };
                c.link_code.clear();
            }),
            "click.link_code",
            "required",
        ),
        (
            "click with link and creator",
            with_payload(click("e", "v"), |p| {
                let Payload::Click(c) = p else { unreachable!() };
                c.creator_id = "anna".into();
                c.campaign_id = "spring".into();
            }),
            "click.link_code",
            "exclusive",
        ),
        (
            "zero amount",
            order_with(|o| o.amount = money("0", "USD")),
            "order.amount.amount",
            "not_positive",
        ),
        (
            "negative amount",
            order_with(|o| o.amount = money("-5.00", "USD")),
            "order.amount.amount",
            "not_positive",
        ),
        (
            "three decimals in USD",
            order_with(|o| o.amount = money("10.001", "USD")),
            "order.amount.amount",
            "precision",
        ),
        (
            "decimals in JPY",
            order_with(|o| o.amount = money("100.5", "JPY")),
            "order.amount.amount",
            "precision",
        ),
        (
            "four decimals in KWD",
            order_with(|o| o.amount = money("1.0005", "KWD")),
            "order.amount.amount",
            "precision",
        ),
        (
            "unknown currency",
            order_with(|o| o.amount = money("10.00", "XYZ")),
            "order.amount.currency",
            "unknown_currency",
        ),
        (
            "lower-case currency",
            order_with(|o| o.amount = money("10.00", "usd")),
            "order.amount.currency",
            "unknown_currency",
        ),
        (
            "words for an amount",
            order_with(|o| o.amount = money("ten", "USD")),
            "order.amount.amount",
            "malformed_decimal",
        ),
        (
            "exponent amount",
            order_with(|o| o.amount = money("1e3", "USD")),
            "order.amount.amount",
            "malformed_decimal",
        ),
        (
            "float-looking amount with spaces",
            order_with(|o| o.amount = money(" 10.00", "USD")),
            "order.amount.amount",
            "malformed_decimal",
        ),
        (
            "missing amount",
            order_with(|o| o.amount = None),
            "order.amount",
            "required",
        ),
        (
            "empty order id",
            order_with(|o| o.order_id.clear()),
            "order.order_id",
            "required",
        ),
        (
            "tax in another currency",
            order_with(|o| o.tax = money("1.00", "EUR")),
            "order.tax.currency",
            "currency_mismatch",
        ),
        (
            "tax above the amount",
            order_with(|o| o.tax = money("90.00", "USD")),
            "order.amount",
            "less_than_extras",
        ),
        (
            "line item of quantity zero",
            order_with(|o| {
                o.line_items = vec![v1::LineItem {
                    sku: "s".into(),
                    quantity: 0,
                    unit_price: "1.00".into(),
                    ..Default::default()
                }]
            }),
            "order.line_items[0].quantity",
            "not_positive",
        ),
        (
            "line item with a malformed price",
            order_with(|o| {
                o.line_items = vec![v1::LineItem {
                    sku: "s".into(),
                    quantity: 1,
                    unit_price: "1,00".into(),
                    ..Default::default()
                }]
            }),
            "order.line_items[0].unit_price",
            "malformed_decimal",
        ),
        (
            "promo code of 129 bytes",
            order_with(|o| o.promo_codes = vec!["P".repeat(129)]),
            "order.promo_codes[0]",
            "too_long",
        ),
        (
            "adjustment without kind",
            adjustment(0),
            "adjustment.kind",
            "required",
        ),
        (
            "adjustment with an unknown kind",
            adjustment(99),
            "adjustment.kind",
            "required",
        ),
        (
            "lead status unspecified",
            v1::Event {
                event_id: "ls".into(),
                occurred_at: Some(now()),
                payload: Some(Payload::LeadStatus(v1::LeadStatus {
                    lead_id: "l".into(),
                    status: 0,
                })),
                ..Default::default()
            },
            "lead_status.status",
            "required",
        ),
        (
            "signup without lead id",
            v1::Event {
                event_id: "su".into(),
                occurred_at: Some(now()),
                payload: Some(Payload::Signup(v1::Signup {
                    visitor_id: "v".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            "signup.lead_id",
            "required",
        ),
        (
            "engagement without post",
            v1::Event {
                event_id: "en".into(),
                occurred_at: Some(now()),
                payload: Some(Payload::Engagement(v1::Engagement {
                    creator_id: "anna".into(),
                    campaign_id: "spring".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            "engagement.post_id",
            "required",
        ),
        (
            "oversized event",
            with_payload(click("e", "v"), |p| {
                let Payload::Click(c) = p else { unreachable!() };
                c.referrer = "r".repeat(9000);
            }),
            "event",
            "too_large",
        ),
    ]
}

#[tokio::test]
async fn every_bad_input_is_refused_with_its_field_and_rule() {
    let svc = start().await;
    let mut client = client(svc.addr).await;
    let table = bad_inputs();
    assert!(table.len() >= 30, "the table must keep at least 30 cases");
    for (name, event, field, rule) in table {
        let status = client
            .send(with_key(v1::SendRequest { event: Some(event) }, INGEST_KEY))
            .await
            .expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .unwrap_or_else(|| panic!("{name}: no field violations"))
            .field_violations;
        assert!(
            violations
                .iter()
                .any(|v| v.field == field && v.description.starts_with(&format!("{rule}:"))),
            "{name}: expected {field} / {rule}, got {violations:?}"
        );
    }
    assert!(
        svc.publisher.records().is_empty(),
        "nothing invalid may be published"
    );
    svc.shutdown.cancel();
    svc.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn oversized_batches_and_messages_are_refused() {
    let svc = start().await;
    let mut client = client(svc.addr).await;
    let events: Vec<v1::Event> = (0..51).map(|i| click(&format!("e{i}"), "v")).collect();
    let status = client
        .send_batch(with_key(v1::SendBatchRequest { events }, INGEST_KEY))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("events: too_many"), "{status:?}");

    // A message over --max-message-bytes (256 KiB here) is refused by the transport.
    let events: Vec<v1::Event> = (0..40)
        .map(|i| {
            with_payload(click(&format!("big{i}"), "v"), |p| {
                let Payload::Click(c) = p else { unreachable!() };
                c.referrer = "r".repeat(7000);
            })
        })
        .collect();
    let request = v1::SendBatchRequest { events };
    assert!(request.encoded_len() > 256 * 1024);
    let status = client
        .send_batch(with_key(request, INGEST_KEY))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(svc.publisher.records().is_empty());
    svc.shutdown.cancel();
    svc.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn keys_decide_who_may_send_and_for_which_tenant() {
    let svc = start().await;
    let mut client = client(svc.addr).await;
    let status = client
        .send(v1::SendRequest {
            event: Some(click("e1", "v1")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "no key");
    let status = client
        .send(with_key(
            v1::SendRequest {
                event: Some(click("e1", "v1")),
            },
            "nobody-issued-this",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "unknown key");
    let status = client
        .send(with_key(
            v1::SendRequest {
                event: Some(click("e1", "v1")),
            },
            READ_KEY,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "a read key may not send"
    );
    assert!(svc.publisher.records().is_empty());

    // A key of another tenant cannot write into this one, whatever the body says.
    let event = v1::Event {
        tenant_id: "acme".into(),
        ..click("e1", "v1")
    };
    client
        .send(with_key(
            v1::SendRequest { event: Some(event) },
            OTHER_TENANT_KEY,
        ))
        .await
        .unwrap();
    let records = svc.publisher.records();
    assert_eq!(records.len(), 1);
    let published = v1::Event::decode(records[0].payload.as_slice()).unwrap();
    assert_eq!(published.tenant_id, "globex");
    assert_eq!(records[0].key, "globex\u{1f}v1");
    svc.shutdown.cancel();
    svc.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_batch_publishes_only_its_good_items_and_answers_duplicates() {
    let svc = start().await;
    let mut client = client(svc.addr).await;
    let events = vec![
        click("c1", "v1"),
        order_with(|o| o.amount = money("0", "USD")),
        order("o1", "v1", "A-1", "80.00"),
    ];
    let results = client
        .send_batch(with_key(v1::SendBatchRequest { events }, INGEST_KEY))
        .await
        .unwrap()
        .into_inner()
        .results;
    let statuses: Vec<ItemStatus> = results.iter().map(|r| r.status()).collect();
    assert_eq!(
        statuses,
        vec![
            ItemStatus::Accepted,
            ItemStatus::Rejected,
            ItemStatus::Accepted
        ]
    );
    assert_eq!(results[1].violations[0].field, "order.amount.amount");
    let records = svc.publisher.records();
    assert_eq!(
        records.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(),
        vec!["t.clicks", "t.orders"]
    );

    // PII never leaves raw; tenant and receive time are set by ingest.
    let published = v1::Event::decode(records[1].payload.as_slice()).unwrap();
    let Some(Payload::Order(o)) = &published.payload else {
        panic!()
    };
    assert!(o.email.is_empty());
    assert_eq!(
        o.email_hash,
        payoff_proto::convert::email_hash("buyer@example.com")
    );
    let click = v1::Event::decode(records[0].payload.as_slice()).unwrap();
    let context = click.context.unwrap();
    assert!(context.ip.is_empty() && context.user_agent.is_empty());
    assert_eq!(context.ip_hash.len(), 64);
    assert_eq!(published.tenant_id, "acme");
    assert!(published.received_at.is_some());

    // Resending is safe: recent ids are answered as duplicates and not published again.
    let again = client
        .send(with_key(
            v1::SendRequest {
                event: Some(order("o1", "v1", "A-1", "80.00")),
            },
            INGEST_KEY,
        ))
        .await
        .unwrap();
    assert_eq!(
        again.into_inner().result.unwrap().status(),
        ItemStatus::Duplicate
    );
    assert_eq!(svc.publisher.records().len(), 2);
    svc.shutdown.cancel();
    svc.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn client_streaming_reports_every_event() {
    let svc = start().await;
    let mut client = client(svc.addr).await;
    let events: Vec<v1::Event> = (0..120)
        .map(|i| click(&format!("s{i}"), &format!("v{}", i % 7)))
        .collect();
    let stream = tokio_stream::iter(events);
    let results = client
        .send_stream(with_key(stream, INGEST_KEY))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 120);
    assert!(results.iter().all(|r| r.status() == ItemStatus::Accepted));
    assert_eq!(svc.publisher.records().len(), 120);
    svc.shutdown.cancel();
    svc.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn rate_limits_answer_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let mut cfg = config(&dir, "", "t.");
    cfg.rate_per_key = 10;
    let bound = payoff_ingest::bind(cfg, shutdown.clone()).await.unwrap();
    let addr = bound.grpc_addr;
    let task = tokio::spawn(bound.serve_with(Arc::new(MemoryPublisher::default())));
    let mut client = client(addr).await;
    let events: Vec<v1::Event> = (0..11).map(|i| click(&format!("r{i}"), "v")).collect();
    let status = client
        .send_batch(with_key(v1::SendBatchRequest { events }, INGEST_KEY))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut cfg = config(&dir, "", "t.");
    cfg.tls_cert = Some(cert);
    cfg.tls_key = Some(key);
    let shutdown = CancellationToken::new();
    let bound = payoff_ingest::bind(cfg, shutdown.clone()).await.unwrap();
    let addr = bound.grpc_addr;
    let publisher = MemoryPublisher::default();
    let task = tokio::spawn(bound.serve_with(Arc::new(publisher.clone())));

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS handshake");
    let mut client = v1::ingest_client::IngestClient::new(channel);
    let answer = client
        .send(with_key(
            v1::SendRequest {
                event: Some(click("tls-1", "v1")),
            },
            INGEST_KEY,
        ))
        .await
        .unwrap();
    assert_eq!(
        answer.into_inner().result.unwrap().status(),
        ItemStatus::Accepted
    );

    // A plaintext client cannot talk to a TLS listener.
    let plain = v1::ingest_client::IngestClient::connect(format!("http://{addr}")).await;
    if let Ok(mut plain) = plain {
        assert!(
            plain
                .send(with_key(
                    v1::SendRequest {
                        event: Some(click("tls-2", "v1"))
                    },
                    INGEST_KEY
                ))
                .await
                .is_err()
        );
    }
    assert_eq!(publisher.records().len(), 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn health_serves_and_metrics_are_exposed() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let bound = payoff_ingest::bind(config(&dir, "", "t."), shutdown.clone())
        .await
        .unwrap();
    let (addr, metrics_addr) = (bound.grpc_addr, bound.metrics_addr);
    let task = tokio::spawn(bound.serve_with(Arc::new(MemoryPublisher::default())));

    // Health turns SERVING once the publisher is reachable: watch it, with a deadline.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "payoff.v1.Ingest".into(),
    };
    let mut updates = health.watch(request).await.unwrap().into_inner();
    let serving = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(update) = updates.message().await.unwrap() {
            if update.status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(serving, Ok(true), "ingest never reported SERVING");
    // An open watch stream would hold the graceful drain until its timeout.
    drop(updates);
    drop(health);

    let mut client = client(addr).await;
    client
        .send(with_key(
            v1::SendRequest {
                event: Some(click("m1", "v1")),
            },
            INGEST_KEY,
        ))
        .await
        .unwrap();
    let _ = client
        .send(with_key(
            v1::SendRequest {
                event: Some(click("", "v1")),
            },
            INGEST_KEY,
        ))
        .await;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    for name in [
        "payoff_ingest_events_total",
        "payoff_ingest_rejections_total",
        "payoff_ingest_requests_total",
        "payoff_ingest_request_duration_seconds",
        "payoff_ingest_batch_size_events",
        "payoff_ingest_in_flight_events",
    ] {
        assert!(
            body.contains(&format!("# HELP {name}")),
            "{name} has no help text:\n{body}"
        );
    }
    assert!(
        body.contains(r#"payoff_ingest_events_total{type="click",result="accepted"}"#),
        "{body}"
    );
    assert!(
        body.contains(r#"payoff_ingest_rejections_total{reason="required"}"#),
        "{body}"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[test]
fn bad_configuration_lists_every_problem_and_exits_64() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_payoff-ingest"))
        .args(["--tls-cert", "/nonexistent/cert.pem", "--max-batch", "0"])
        .env_remove("PAYOFF_API_KEYS")
        .env_remove("PAYOFF_PII_SECRET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for problem in [
        "--tls-cert and --tls-key go together",
        "--api-keys",
        "--pii-secret",
        "--max-batch",
    ] {
        assert!(
            stderr.contains(problem),
            "missing {problem:?} in:\n{stderr}"
        );
    }
}
