//! The `Ingest` gRPC service: authenticate, validate, hash PII, publish, acknowledge.

use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::join_all;
use governor::{DefaultKeyedRateLimiter, Quota};
use payoff_adapters::topology::Topics;
use payoff_core::{
    Violation,
    event::{Event, RawEvent},
    time::Timestamp,
};
use payoff_proto::{
    convert,
    v1::{self, event::Payload, event_result::Status as ItemStatus},
};
use payoff_runtime::{
    ServiceError,
    auth::{KeyStore, Principal, Role},
};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    dedupe::RecentIds,
    metrics as m,
    publisher::{PublishError, Publisher, Record},
};

/// Limits and settings of the service.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most events per batch.
    pub max_batch: usize,
    /// Largest encoded event.
    pub max_event_bytes: usize,
    /// Most events in flight.
    pub max_in_flight: usize,
    /// Longest wait for room in flight.
    pub admit_timeout: Duration,
    /// Events per second per key (0: unlimited).
    pub rate_per_key: u32,
}

/// The ingest service over a publisher.
pub struct IngestService<P> {
    keys: KeyStore,
    publisher: Arc<P>,
    topics: Topics,
    pii_secret: Vec<u8>,
    recent: RecentIds,
    in_flight: Semaphore,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    limits: Limits,
}

/// The outcome of checking one event before publishing.
enum Checked {
    Publish {
        event_id: String,
        tenant: String,
        record: Record,
        kind: &'static str,
    },
    Done(Outcome, &'static str),
}

/// What happened to one event.
struct Outcome {
    event_id: String,
    status: ItemStatus,
    violations: Vec<Violation>,
}

impl Outcome {
    fn into_result(self) -> v1::EventResult {
        result(&self.event_id, self.status, &self.violations)
    }
}

fn result(event_id: &str, status: ItemStatus, violations: &[Violation]) -> v1::EventResult {
    v1::EventResult {
        event_id: event_id.to_owned(),
        status: status.into(),
        violations: violations
            .iter()
            .map(|v| v1::FieldViolation {
                field: v.field.clone(),
                rule: v.rule.to_owned(),
                description: v.detail.clone(),
            })
            .collect(),
    }
}

fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

impl<P: Publisher> IngestService<P> {
    /// A service publishing to `publisher` under `topics`.
    pub fn new(
        keys: KeyStore,
        publisher: Arc<P>,
        topics: Topics,
        pii_secret: &[u8],
        dedupe_capacity: usize,
        limits: Limits,
    ) -> Self {
        let limiter = NonZeroU32::new(limits.rate_per_key)
            .map(|rate| DefaultKeyedRateLimiter::keyed(Quota::per_second(rate)));
        Self {
            keys,
            publisher,
            topics,
            pii_secret: pii_secret.to_vec(),
            recent: RecentIds::new(dedupe_capacity),
            in_flight: Semaphore::new(limits.max_in_flight),
            limiter,
            limits,
        }
    }

    fn salt(&self, tenant: &str) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update((self.pii_secret.len() as u64).to_le_bytes());
        h.update(&self.pii_secret);
        h.update(tenant.as_bytes());
        h.finalize().to_vec()
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<Principal, ServiceError> {
        let principal = self.keys.authenticate(request.metadata())?;
        principal.require(&[Role::Ingest], "send events")?;
        Ok(principal)
    }

    fn rate_limit(&self, principal: &Principal, events: usize) -> Result<(), ServiceError> {
        let (Some(limiter), Some(n)) = (
            &self.limiter,
            NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)),
        ) else {
            return Ok(());
        };
        match limiter.check_key_n(&principal.key_id, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(ServiceError::ResourceExhausted(format!(
                "API key {} is over its rate of {} events/s",
                principal.key_id, self.limits.rate_per_key
            ))),
        }
    }

    /// Validates one event and prepares its record. Never touches Kafka.
    fn check(&self, principal: &Principal, mut event: v1::Event, now: Timestamp) -> Checked {
        let event_id = event.event_id.clone();
        if event.encoded_len() > self.limits.max_event_bytes {
            let v = Violation::new(
                "event",
                "too_large",
                format!(
                    "is {} bytes, at most {} allowed",
                    event.encoded_len(),
                    self.limits.max_event_bytes
                ),
            );
            return Checked::Done(
                Outcome {
                    event_id,
                    status: ItemStatus::Rejected,
                    violations: vec![v],
                },
                "unknown",
            );
        }
        let tenant = principal.tenant.as_str().to_owned();
        event.tenant_id = tenant.clone();
        event.received_at = Some(convert::to_timestamp(now));
        convert::hash_pii(&mut event, &self.salt(&tenant));
        let validated = match Event::validate(&RawEvent::from(&event), now) {
            Ok(e) => e,
            Err(rejection) => {
                let kind = event.payload.as_ref().map_or("unknown", payload_type);
                return Checked::Done(
                    Outcome {
                        event_id,
                        status: ItemStatus::Rejected,
                        violations: rejection.violations().to_vec(),
                    },
                    kind,
                );
            }
        };
        let kind = validated.payload.type_name();
        if self.recent.contains(&tenant, &event_id) {
            return Checked::Done(
                Outcome {
                    event_id,
                    status: ItemStatus::Duplicate,
                    violations: Vec::new(),
                },
                kind,
            );
        }
        let (topic, record_key) = self.topics.route(&tenant, &validated);
        let topic = topic.to_owned();
        let record = Record {
            topic,
            key: record_key,
            payload: event.encode_to_vec(),
        };
        Checked::Publish {
            event_id,
            tenant,
            record,
            kind,
        }
    }

    /// Checks and publishes a set of events; one result per event, in order. Fails as a
    /// whole only when Kafka fails (then nothing that failed was acknowledged).
    async fn process(
        &self,
        principal: &Principal,
        events: Vec<v1::Event>,
    ) -> Result<Vec<Outcome>, ServiceError> {
        let n = events.len();
        ::metrics::histogram!(m::BATCH_SIZE).record(n as f64);
        self.rate_limit(principal, n)?;
        let permits = u32::try_from(n).unwrap_or(u32::MAX);
        let _permit = tokio::time::timeout(
            self.limits.admit_timeout,
            self.in_flight.acquire_many(permits),
        )
        .await
        .map_err(|_| {
            ServiceError::Unavailable("ingest is at its in-flight limit; retry later".to_owned())
        })?
        .map_err(|_| ServiceError::Unavailable("ingest is shutting down".to_owned()))?;
        ::metrics::gauge!(m::IN_FLIGHT).increment(n as f64);
        let now = now();
        let checked: Vec<Checked> = events
            .into_iter()
            .map(|e| self.check(principal, e, now))
            .collect();
        let publishes = checked.iter().map(|c| async move {
            match c {
                Checked::Publish { record, .. } => {
                    Some(self.publisher.publish(record.clone()).await)
                }
                Checked::Done(..) => None,
            }
        });
        let outcomes = join_all(publishes).await;
        ::metrics::gauge!(m::IN_FLIGHT).decrement(n as f64);
        let mut results = Vec::with_capacity(n);
        let mut failure: Option<PublishError> = None;
        for (c, outcome) in checked.into_iter().zip(outcomes) {
            match (c, outcome) {
                (
                    Checked::Publish {
                        event_id,
                        tenant,
                        kind,
                        ..
                    },
                    Some(Ok(())),
                ) => {
                    self.recent.insert(&tenant, &event_id);
                    ::metrics::counter!(m::EVENTS, "type" => kind, "result" => "accepted")
                        .increment(1);
                    results.push(Outcome {
                        event_id,
                        status: ItemStatus::Accepted,
                        violations: Vec::new(),
                    });
                }
                (Checked::Publish { kind, .. }, Some(Err(e))) => {
                    ::metrics::counter!(m::EVENTS, "type" => kind, "result" => "failed")
                        .increment(1);
                    failure.get_or_insert(e);
                }
                (Checked::Done(r, kind), _) => {
                    let label = if r.status == ItemStatus::Duplicate {
                        "duplicate"
                    } else {
                        "rejected"
                    };
                    ::metrics::counter!(m::EVENTS, "type" => kind, "result" => label).increment(1);
                    for v in &r.violations {
                        ::metrics::counter!(m::REJECTIONS, "reason" => v.rule).increment(1);
                    }
                    results.push(r);
                }
                (Checked::Publish { .. }, None) => unreachable!("every publish has an outcome"),
            }
        }
        if let Some(e) = failure {
            tracing::warn!(error = %e, tenant = %principal.tenant, "publish failed, request not acknowledged");
            return Err(ServiceError::Unavailable(format!(
                "{e}; nothing failed was acknowledged, retry the request"
            )));
        }
        Ok(results)
    }
}

fn payload_type(p: &Payload) -> &'static str {
    match p {
        Payload::Click(_) => "click",
        Payload::Signup(_) => "signup",
        Payload::Order(_) => "order",
        Payload::Adjustment(_) => "adjustment",
        Payload::LeadStatus(_) => "lead_status",
        Payload::Engagement(_) => "engagement",
    }
}

fn observe<T>(method: &'static str, started: Instant, outcome: &Result<T, ServiceError>) {
    let code = match outcome {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    ::metrics::counter!(m::REQUESTS, "method" => method, "code" => code).increment(1);
    ::metrics::histogram!(m::REQUEST_DURATION, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

#[tonic::async_trait]
impl<P: Publisher> v1::ingest_server::Ingest for IngestService<P> {
    async fn send(
        &self,
        request: Request<v1::SendRequest>,
    ) -> Result<Response<v1::SendResponse>, Status> {
        let started = Instant::now();
        let outcome = async {
            let principal = self.authorize(&request)?;
            let event = request.into_inner().event.unwrap_or_default();
            let mut results = self.process(&principal, vec![event]).await?;
            let outcome = results
                .pop()
                .ok_or_else(|| ServiceError::Internal("no result".to_owned()))?;
            if outcome.status == ItemStatus::Rejected {
                return Err(ServiceError::Invalid(outcome.violations));
            }
            Ok(v1::SendResponse {
                result: Some(outcome.into_result()),
            })
        }
        .await;
        observe("send", started, &outcome);
        outcome.map(Response::new).map_err(Status::from)
    }

    async fn send_batch(
        &self,
        request: Request<v1::SendBatchRequest>,
    ) -> Result<Response<v1::SendBatchResponse>, Status> {
        let started = Instant::now();
        let outcome = async {
            let principal = self.authorize(&request)?;
            let events = request.into_inner().events;
            if events.len() > self.limits.max_batch {
                return Err(ServiceError::Invalid(vec![Violation::new(
                    "events",
                    "too_many",
                    format!(
                        "{} events, at most {} per batch",
                        events.len(),
                        self.limits.max_batch
                    ),
                )]));
            }
            let results = self.process(&principal, events).await?;
            Ok(v1::SendBatchResponse {
                results: results.into_iter().map(Outcome::into_result).collect(),
            })
        }
        .await;
        observe("send_batch", started, &outcome);
        outcome.map(Response::new).map_err(Status::from)
    }

    async fn send_stream(
        &self,
        request: Request<Streaming<v1::Event>>,
    ) -> Result<Response<v1::SendBatchResponse>, Status> {
        let started = Instant::now();
        let outcome = async {
            let principal = self.authorize(&request)?;
            let mut stream = request.into_inner();
            let mut results = Vec::new();
            let mut chunk = Vec::with_capacity(self.limits.max_batch);
            while let Some(event) = stream.next().await {
                let event = event.map_err(|s| {
                    ServiceError::Invalid(vec![Violation::new(
                        "stream",
                        "malformed",
                        s.message().to_owned(),
                    )])
                })?;
                chunk.push(event);
                if chunk.len() == self.limits.max_batch {
                    results.extend(self.process(&principal, std::mem::take(&mut chunk)).await?);
                }
            }
            if !chunk.is_empty() {
                results.extend(self.process(&principal, chunk).await?);
            }
            Ok(v1::SendBatchResponse {
                results: results.into_iter().map(Outcome::into_result).collect(),
            })
        }
        .await;
        observe("send_stream", started, &outcome);
        outcome.map(Response::new).map_err(Status::from)
    }
}
