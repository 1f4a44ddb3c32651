//! The `Admin` gRPC service (SPEC §3, §7, §11): program versions and the payouts and
//! manual adjustments that become ledger entries. Every call needs an `admin` key and
//! acts on that key's tenant.
//!
//! Nothing here writes the store: a program version is published to the compacted
//! `programs` topic (keyed tenant + version), an API key (its hash; the secret is only
//! in the answer) to the compacted `api-keys` topic that every service follows (keyed
//! tenant + key id; a tombstone revokes it), and a payout or adjustment to `credits`,
//! keyed like the book it belongs to (tenant + campaign + creator), so the ledger folds
//! it in order with that book's credits and a rebuild from Kafka finds it.

use std::{sync::Arc, time::Duration};

use payoff_adapters::{
    kafka as adapters,
    topology::{self, Topics},
};
use payoff_core::{
    Violation,
    ids::{CampaignId, CreatorId, RecordId, TenantId},
    ledger::{self, Book, LedgerFact, LedgerInput},
    time::Timestamp,
};
use payoff_proto::{
    convert::{self, entry_to_proto, money, timestamp, to_timestamp},
    v1::{self, admin_server::Admin},
};
use payoff_runtime::{
    ServiceError,
    auth::{IssuedKey, KeyStore, Principal, Role, hash_secret, key_creator, new_secret},
};
use prost::Message as _;
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use tonic::{Request, Response, Status};

use crate::pipeline::Shared;

/// The header that marks a payout, manual adjustment or engagement snapshot on
/// `credits`; its value is the kind: [`PAYOUT`], [`MANUAL`] or
/// [`topology::ENGAGEMENT_INPUT`].
pub const INPUT_HEADER: &str = topology::INPUT_HEADER;
/// A `RecordPayoutRequest`.
pub const PAYOUT: &str = "payout";
/// A `RecordManualAdjustmentRequest` (with `occurred_at` set).
pub const MANUAL: &str = "manual_adjustment";

fn invalid(v: Violation) -> ServiceError {
    ServiceError::Invalid(vec![v])
}

fn required(field: &str, value: &str) -> Result<(), ServiceError> {
    if value.is_empty() {
        return Err(invalid(Violation::new(
            field,
            "required",
            format!("{field} is required"),
        )));
    }
    Ok(())
}

/// Decodes a payout or manual adjustment record of `credits` (`kind` is the
/// [`INPUT_HEADER`] value; the tenant is the key's first part).
pub fn record_of(
    kind: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<(TenantId, LedgerInput), String> {
    let tenant = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.split(topology::KEY_SEPARATOR).next())
        .ok_or("no tenant in the record key")?;
    let tenant = TenantId::parse("tenant", tenant).map_err(|v| v.to_string())?;
    let input = match kind {
        PAYOUT => {
            let r = v1::RecordPayoutRequest::decode(payload).map_err(|e| e.to_string())?;
            payout_input(&r).map_err(|e| e.to_string())?
        }
        MANUAL => {
            let r =
                v1::RecordManualAdjustmentRequest::decode(payload).map_err(|e| e.to_string())?;
            manual_input(&r).map_err(|e| e.to_string())?
        }
        topology::ENGAGEMENT_INPUT => engagement_input(payload)?,
        other => return Err(format!("unknown ledger input kind {other:?}")),
    };
    Ok((tenant, input))
}

/// An engagement snapshot the attributor passed on (already validated against ingest's
/// clock, so no clock check here).
fn engagement_input(payload: &[u8]) -> Result<LedgerInput, String> {
    let proto = v1::Event::decode(payload).map_err(|e| e.to_string())?;
    let event = payoff_core::event::Event::validate(
        &payoff_core::event::RawEvent::from(&proto),
        payoff_core::time::Timestamp(i64::MAX / 2),
    )
    .map_err(|e| e.to_string())?;
    let payoff_core::event::Payload::Engagement(engagement) = event.payload else {
        return Err("an engagement input that is not an engagement event".into());
    };
    Ok(LedgerInput::Engagement {
        event: event.id,
        at: event.occurred_at,
        engagement,
    })
}

fn payout_input(r: &v1::RecordPayoutRequest) -> Result<LedgerInput, ServiceError> {
    required("payout_id", &r.payout_id)?;
    let amount = money("amount", r.amount.as_ref()).map_err(invalid)?;
    if amount.amount <= rust_decimal::Decimal::ZERO {
        return Err(invalid(Violation::new(
            "amount",
            "positive",
            "a payout is a positive amount",
        )));
    }
    let at = r
        .paid_at
        .as_ref()
        .map(timestamp)
        .ok_or_else(|| invalid(Violation::new("paid_at", "required", "paid_at is required")))?;
    Ok(LedgerInput::Payout {
        id: RecordId::parse("payout_id", &r.payout_id).map_err(invalid)?,
        campaign: CampaignId::parse("campaign_id", &r.campaign_id).map_err(invalid)?,
        creator: CreatorId::parse("creator_id", &r.creator_id).map_err(invalid)?,
        amount,
        at,
        note: r.note.clone(),
    })
}

fn manual_input(r: &v1::RecordManualAdjustmentRequest) -> Result<LedgerInput, ServiceError> {
    required("adjustment_id", &r.adjustment_id)?;
    required("note", &r.note)?;
    let amount = money("amount", r.amount.as_ref()).map_err(invalid)?;
    if amount.amount.is_zero() {
        return Err(invalid(Violation::new(
            "amount",
            "not_zero",
            "an adjustment is not zero",
        )));
    }
    let at = r.occurred_at.as_ref().map(timestamp).ok_or_else(|| {
        invalid(Violation::new(
            "occurred_at",
            "required",
            "occurred_at is required",
        ))
    })?;
    Ok(LedgerInput::Manual {
        id: RecordId::parse("adjustment_id", &r.adjustment_id).map_err(invalid)?,
        campaign: CampaignId::parse("campaign_id", &r.campaign_id).map_err(invalid)?,
        creator: CreatorId::parse("creator_id", &r.creator_id).map_err(invalid)?,
        amount,
        at,
        note: r.note.clone(),
    })
}

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// The `Admin` service.
#[derive(Clone)]
pub struct AdminService {
    shared: Shared,
    keys: KeyStore,
    producer: FutureProducer,
    topics: Topics,
    /// Serializes program puts of this instance (version numbers are assigned here).
    puts: Arc<tokio::sync::Mutex<()>>,
}

impl AdminService {
    /// A service publishing to the cluster at `brokers`.
    pub fn new(
        shared: Shared,
        keys: KeyStore,
        brokers: &str,
        topics: Topics,
    ) -> Result<Self, crate::LedgerError> {
        let mut config = adapters::base_config(brokers, "payoff-ledger-admin")
            .map_err(|e| crate::LedgerError::Kafka(e.to_string()))?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", topology::PARTITIONER);
        let producer = config
            .create()
            .map_err(|e| crate::LedgerError::Kafka(format!("admin producer: {e}")))?;
        Ok(Self {
            shared,
            keys,
            producer,
            topics,
            puts: Arc::default(),
        })
    }

    fn admin<T>(&self, request: &Request<T>) -> Result<Principal, ServiceError> {
        let principal = self.keys.authenticate(request.metadata())?;
        principal.require(&[Role::Admin], "administer the tenant")?;
        Ok(principal)
    }

    /// Publishes one record (`payload` None: a tombstone); its offset once delivered.
    async fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<i64, ServiceError> {
        let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|delivery| delivery.offset)
            .map_err(|(e, _)| ServiceError::Unavailable(format!("publish to {topic}: {e}")))
    }

    /// The entry `input` books (its id is derived from the record id, so it is the one
    /// the ledger stores), checked against the tenant's program.
    fn entry_of(
        &self,
        tenant: &TenantId,
        input: &LedgerInput,
    ) -> Result<v1::LedgerEntry, ServiceError> {
        let programs = self
            .shared
            .programs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let history = programs.get(tenant).ok_or(ServiceError::NotFound)?;
        let facts = ledger::decide(&Book::default(), history, input)
            .map_err(|skip| invalid(Violation::new("campaign_id", "unusable", skip.to_string())))?;
        facts
            .iter()
            .find_map(|f| match f {
                LedgerFact::Entry(e) => Some(entry_to_proto(tenant, e, None)),
                _ => None,
            })
            .ok_or_else(|| ServiceError::Internal("the ledger booked no entry".into()))
    }

    async fn record(
        &self,
        tenant: &TenantId,
        input: &LedgerInput,
        kind: &'static str,
        payload: Vec<u8>,
    ) -> Result<v1::LedgerEntry, ServiceError> {
        let entry = self.entry_of(tenant, input)?;
        let (campaign, creator) = input.key();
        let key = topology::key(&[tenant.as_str(), campaign.as_str(), creator.as_str()]);
        let headers = OwnedHeaders::new().insert(Header {
            key: INPUT_HEADER,
            value: Some(kind),
        });
        self.publish(&self.topics.credits, &key, Some(&payload), Some(headers))
            .await?;
        Ok(entry)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn put_program(
        &self,
        request: Request<v1::PutProgramRequest>,
    ) -> Result<Response<v1::PutProgramResponse>, Status> {
        let principal = self.admin(&request)?;
        let mut program = request
            .into_inner()
            .program
            .ok_or_else(|| invalid(Violation::new("program", "required", "program is required")))?;
        let _serial = self.puts.lock().await;
        let latest = {
            let catalog = self
                .shared
                .catalog
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            catalog
                .range(
                    (principal.tenant.as_str().to_owned(), 0)
                        ..=(principal.tenant.as_str().to_owned(), u64::MAX),
                )
                .next_back()
                .map_or(0, |((_, v), _)| *v)
        };
        let next = latest + 1;
        if program.version != 0 && program.version != next {
            return Err(ServiceError::FailedPrecondition(format!(
                "expected version {} but the next version is {next}",
                program.version
            ))
            .into());
        }
        program.version = next;
        program.tenant_id = principal.tenant.as_str().to_owned();
        convert::program(&program).map_err(|r| ServiceError::Invalid(r.violations().to_vec()))?;
        let key = topology::key(&[principal.tenant.as_str(), &next.to_string()]);
        self.publish(
            &self.topics.programs,
            &key,
            Some(&program.encode_to_vec()),
            None,
        )
        .await?;
        tracing::info!(tenant = %principal.tenant, version = next, key = %principal.key_id, "program version published");
        Ok(Response::new(v1::PutProgramResponse { version: next }))
    }

    async fn get_program(
        &self,
        request: Request<v1::GetProgramRequest>,
    ) -> Result<Response<v1::GetProgramResponse>, Status> {
        let principal = self.admin(&request)?;
        let tenant = principal.tenant.as_str().to_owned();
        let catalog = self
            .shared
            .catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = match request.get_ref().version {
            Some(v) => catalog.get(&(tenant, v)),
            None => catalog
                .range((tenant.clone(), 0)..=(tenant, u64::MAX))
                .next_back()
                .map(|(_, p)| p),
        };
        let (program, _) = found.ok_or(ServiceError::NotFound)?;
        Ok(Response::new(v1::GetProgramResponse {
            program: Some(program.clone()),
        }))
    }

    async fn list_programs(
        &self,
        request: Request<v1::ListProgramsRequest>,
    ) -> Result<Response<v1::ListProgramsResponse>, Status> {
        let principal = self.admin(&request)?;
        let req = request.get_ref();
        let tenant = principal.tenant.as_str().to_owned();
        let from = if req.page_token.is_empty() {
            0
        } else {
            req.page_token.parse::<usize>().map_err(|_| {
                invalid(Violation::new(
                    "page_token",
                    "malformed",
                    "not a token this service issued",
                ))
            })?
        };
        let size = match req.page_size as usize {
            0 => 100,
            n => n.min(1_000),
        };
        let catalog = self
            .shared
            .catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all: Vec<v1::ProgramSummary> = catalog
            .range((tenant.clone(), 0)..=(tenant, u64::MAX))
            .rev()
            .map(|((_, version), (p, at))| v1::ProgramSummary {
                version: *version,
                effective_from: p.effective_from,
                created_at: Some(to_timestamp(Timestamp(*at))),
                campaign_count: u32::try_from(p.campaigns.len()).unwrap_or(u32::MAX),
                creator_count: u32::try_from(p.creators.len()).unwrap_or(u32::MAX),
            })
            .collect();
        let page: Vec<_> = all.iter().skip(from).take(size).cloned().collect();
        let next = from + page.len();
        Ok(Response::new(v1::ListProgramsResponse {
            programs: page,
            next_page_token: if next < all.len() {
                next.to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn record_payout(
        &self,
        request: Request<v1::RecordPayoutRequest>,
    ) -> Result<Response<v1::RecordPayoutResponse>, Status> {
        let principal = self.admin(&request)?;
        let req = request.into_inner();
        let input = payout_input(&req)?;
        let entry = self
            .record(&principal.tenant, &input, PAYOUT, req.encode_to_vec())
            .await?;
        Ok(Response::new(v1::RecordPayoutResponse {
            entry: Some(entry),
        }))
    }

    async fn record_manual_adjustment(
        &self,
        request: Request<v1::RecordManualAdjustmentRequest>,
    ) -> Result<Response<v1::RecordManualAdjustmentResponse>, Status> {
        let principal = self.admin(&request)?;
        let mut req = request.into_inner();
        if req.occurred_at.is_none() {
            req.occurred_at = Some(to_timestamp(now()));
        }
        let input = manual_input(&req)?;
        let entry = self
            .record(&principal.tenant, &input, MANUAL, req.encode_to_vec())
            .await?;
        Ok(Response::new(v1::RecordManualAdjustmentResponse {
            entry: Some(entry),
        }))
    }

    async fn put_api_key(
        &self,
        request: Request<v1::PutApiKeyRequest>,
    ) -> Result<Response<v1::PutApiKeyResponse>, Status> {
        let principal = self.admin(&request)?;
        let req = request.into_inner();
        let tenant = principal.tenant.as_str();
        let issued = issued_key(tenant, &req)?;
        let _serial = self.puts.lock().await;
        if self.keys.is_issued(tenant, &issued.id) {
            return Err(ServiceError::FailedPrecondition(format!(
                "key {:?} exists; revoke it first, or issue the new key under a new id",
                issued.id
            ))
            .into());
        }
        let secret = new_secret().map_err(ServiceError::Internal)?;
        let issued = IssuedKey {
            sha256: hash_secret(&secret),
            ..issued
        };
        let record_key = IssuedKey::record_key(tenant, &issued.id);
        let value = serde_json::to_vec(&issued)
            .map_err(|e| ServiceError::Internal(format!("api key record: {e}")))?;
        let offset = self
            .publish(&self.topics.api_keys, &record_key, Some(&value), None)
            .await?;
        // Usable here at once; everywhere else once each service reads the record.
        self.keys
            .apply_issued(&record_key, Some(&value), offset)
            .map_err(ServiceError::Internal)?;
        tracing::info!(tenant, key_id = %issued.id, role = ?issued.role, by = %principal.key_id, "api key issued");
        Ok(Response::new(v1::PutApiKeyResponse {
            key_id: issued.id,
            secret,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::RevokeApiKeyResponse>, Status> {
        let principal = self.admin(&request)?;
        let req = request.into_inner();
        let tenant = principal.tenant.as_str();
        required("key_id", &req.key_id)?;
        let _serial = self.puts.lock().await;
        if !self.keys.is_issued(tenant, &req.key_id) {
            return Err(ServiceError::NotFound.into());
        }
        let record_key = IssuedKey::record_key(tenant, &req.key_id);
        let offset = self
            .publish(&self.topics.api_keys, &record_key, None, None)
            .await?;
        self.keys
            .apply_issued(&record_key, None, offset)
            .map_err(ServiceError::Internal)?;
        tracing::info!(tenant, key_id = %req.key_id, by = %principal.key_id, "api key revoked");
        Ok(Response::new(v1::RevokeApiKeyResponse {}))
    }
}

/// The key a `PutApiKeyRequest` asks for, checked (its hash still to be set).
fn issued_key(tenant: &str, req: &v1::PutApiKeyRequest) -> Result<IssuedKey, ServiceError> {
    let mut violations = Vec::new();
    if let Err(v) = RecordId::parse("key_id", &req.key_id) {
        violations.push(v);
    }
    let role = match v1::ApiKeyRole::try_from(req.role) {
        Ok(v1::ApiKeyRole::Ingest) => Some(Role::Ingest),
        Ok(v1::ApiKeyRole::Read) => Some(Role::Read),
        Ok(v1::ApiKeyRole::Creator) => Some(Role::Creator),
        Ok(v1::ApiKeyRole::Admin) => Some(Role::Admin),
        Ok(v1::ApiKeyRole::Unspecified) | Err(_) => {
            violations.push(Violation::new(
                "role",
                "required",
                "role must be ingest, read, creator or admin",
            ));
            None
        }
    };
    let creator = match role {
        Some(role) => key_creator(
            role,
            Some(req.creator_id.as_str()).filter(|c| !c.is_empty()),
            "creator_id",
        )
        .unwrap_or_else(|v| {
            violations.push(v);
            None
        })
        .map(|c| c.as_str().to_owned()),
        None => None,
    };
    match role {
        Some(role) if violations.is_empty() => Ok(IssuedKey {
            id: req.key_id.clone(),
            tenant: tenant.to_owned(),
            role,
            creator,
            sha256: String::new(),
            description: req.description.clone(),
            issued_at: now().millis(),
        }),
        _ => Err(ServiceError::Invalid(violations)),
    }
}
