//! API keys (§11): per tenant, with a role, stored hashed, reloadable without restart.
//!
//! The key file is JSON: `{"keys": [{"id": "shop-1", "tenant": "acme", "role": "ingest",
//! "sha256": "<hex SHA-256 of the secret>"}, {"id": "anna", "tenant": "acme", "role":
//! "creator", "creator": "anna", "sha256": "..."}]}`. Secrets never appear in it. A caller
//! presents the secret as `authorization: Bearer <secret>` (or `x-api-key: <secret>`).
//! [`KeyStore::watch`] re-reads the file when it changes; a file that fails to parse is
//! reported and the previous keys stay in force.
//!
//! Keys issued through `Admin.PutApiKey` live on the compacted `api-keys` topic instead:
//! one record per key, keyed by tenant + key id, its value an [`IssuedKey`] (JSON, the
//! hash only) and a tombstone once revoked. Every service follows the topic
//! ([`KeyStore::follow`]), so a key works everywhere shortly after it is issued and
//! stops working when it is revoked, without a restart. The file holds the bootstrap
//! keys (an admin key at least); the two sets are checked one after the other.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use payoff_adapters::{kafka as adapters, topology};
use payoff_core::{
    error::Violation,
    ids::{CreatorId, TenantId},
};
use rdkafka::{
    Message as _, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer as _},
    error::KafkaError,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;

use crate::error::ServiceError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Storefronts: send events.
    Ingest,
    /// Dashboards: read the whole tenant.
    Read,
    /// A creator: read only their own data.
    Creator,
    /// Program configuration and payouts.
    Admin,
}

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id (for logs; never the secret).
    pub key_id: String,
    /// The tenant: the isolation boundary.
    pub tenant: TenantId,
    /// The role.
    pub role: Role,
    /// For creator keys, the creator.
    pub creator: Option<CreatorId>,
}

impl Principal {
    /// Fails with `PermissionDenied` unless the key has one of `roles`.
    pub fn require(&self, roles: &[Role], action: &'static str) -> Result<(), ServiceError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ServiceError::PermissionDenied(action))
        }
    }
}

#[derive(Debug, Deserialize)]
struct KeyFile {
    keys: Vec<KeyRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRecord {
    id: String,
    tenant: String,
    role: Role,
    #[serde(default)]
    creator: Option<String>,
    sha256: String,
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid key file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The hex SHA-256 of a secret: the form stored in key files.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The principal of one key record, checked (`at` names the record in errors).
/// The creator a key of `role` names (§11): a creator key names exactly one valid creator,
/// any other key none. The one rule for keys in the key file, in `api-keys` records and in
/// `Admin.PutApiKey` requests (where an empty field is no creator); `field` names the
/// creator field in the violation.
pub fn key_creator(
    role: Role,
    creator: Option<&str>,
    field: &str,
) -> Result<Option<CreatorId>, Violation> {
    match (role, creator) {
        (Role::Creator, Some(c)) => CreatorId::parse(field, c).map(Some),
        (Role::Creator, None) => Err(Violation::new(
            field,
            "required",
            "a creator key names its creator",
        )),
        (_, Some(_)) => Err(Violation::new(
            field,
            "not_allowed",
            "only creator keys name a creator",
        )),
        (_, None) => Ok(None),
    }
}

fn principal_of(
    at: &str,
    id: String,
    tenant: &str,
    role: Role,
    creator: Option<String>,
    sha256: &str,
) -> Result<(String, Principal), String> {
    let tenant = TenantId::parse(&format!("{at}.tenant"), tenant).map_err(|e| e.to_string())?;
    let creator = key_creator(role, creator.as_deref(), &format!("{at}.creator"))
        .map_err(|v| format!("{v} ({})", v.detail))?;
    let hash = sha256.to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{at}.sha256 must be 64 hex digits"));
    }
    Ok((
        hash,
        Principal {
            key_id: id,
            tenant,
            role,
            creator,
        },
    ))
}

fn parse(path: &Path, text: &str) -> Result<HashMap<String, Principal>, KeyFileError> {
    let invalid = |reason: String| KeyFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let file: KeyFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut keys = HashMap::new();
    for (i, k) in file.keys.into_iter().enumerate() {
        let (hash, principal) = principal_of(
            &format!("keys[{i}]"),
            k.id,
            &k.tenant,
            k.role,
            k.creator,
            &k.sha256,
        )
        .map_err(invalid)?;
        if keys.insert(hash, principal).is_some() {
            return Err(invalid(format!(
                "keys[{i}]: the same secret hash appears twice"
            )));
        }
    }
    Ok(keys)
}

/// A key issued through `Admin.PutApiKey`: the value of its `api-keys` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedKey {
    /// The key id, unique within the tenant.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The role.
    pub role: Role,
    /// For creator keys, the creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// When it was issued (milliseconds since the epoch).
    pub issued_at: i64,
}

impl IssuedKey {
    /// The record key on the `api-keys` topic: tenant + key id.
    pub fn record_key(tenant: &str, id: &str) -> String {
        topology::key(&[tenant, id])
    }
}

/// A new random secret (256 bits from the operating system), as presented by callers.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(format!("pk_{}", hex::encode(bytes)))
}

/// Keys from the `api-keys` topic: by secret hash, and each record key's hash.
#[derive(Debug, Default)]
struct Issued {
    by_hash: HashMap<String, Principal>,
    hash_of: HashMap<String, String>,
    /// The offset of the last record applied under each record key.
    applied_at: HashMap<String, i64>,
}

/// The keys in force: the file's, swapped whole on reload, and those issued on the
/// `api-keys` topic, changed record by record.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: Arc<RwLock<Arc<HashMap<String, Principal>>>>,
    issued: Arc<RwLock<Issued>>,
}

impl KeyStore {
    /// Loads keys from a file.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let store = Self::default();
        store.reload(path)?;
        Ok(store)
    }

    /// A store from (secret, principal) pairs (tests, `payoff dev`).
    pub fn from_secrets(pairs: impl IntoIterator<Item = (String, Principal)>) -> Self {
        let keys = pairs
            .into_iter()
            .map(|(secret, p)| (hash_secret(&secret), p))
            .collect();
        Self {
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            issued: Arc::default(),
        }
    }

    /// Re-reads the file; on error the previous keys stay in force.
    pub fn reload(&self, path: &Path) -> Result<usize, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let keys = parse(path, &text)?;
        let n = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(n)
    }

    /// Polls the file every `every` and reloads it when its modification time or size
    /// changes (a rotated Kubernetes secret, an edited file), until `shutdown`.
    pub fn watch(
        &self,
        path: PathBuf,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let stamp = |p: &Path| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
            };
            let mut last = stamp(&path);
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
                match store.reload(&path) {
                    Ok(n) => tracing::info!(keys = n, path = %path.display(), "api keys reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "api key reload failed, keeping previous keys")
                    }
                }
            }
        })
    }

    /// The caller behind the request's key, or `Unauthenticated`.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, ServiceError> {
        let secret = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| metadata.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(ServiceError::Unauthenticated)?;
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let hash = hash_secret(secret);
        if let Some(p) = keys.get(&hash) {
            return Ok(p.clone());
        }
        self.issued
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_hash
            .get(&hash)
            .cloned()
            .ok_or(ServiceError::Unauthenticated)
    }

    /// Applies one `api-keys` record, found at `offset` of the topic: a key issued (or
    /// re-issued) under `record_key`, or revoked (`value` None, a tombstone). A record that
    /// is not a valid key is refused and changes nothing. So does a record older than the
    /// one applied under its key: the service that wrote a record applies it at once, and
    /// its reader of the topic may still be behind, on a record it replaced. Whether the
    /// record was applied.
    pub fn apply_issued(
        &self,
        record_key: &str,
        value: Option<&[u8]>,
        offset: i64,
    ) -> Result<bool, String> {
        let added = match value {
            None => None,
            Some(bytes) => {
                let k: IssuedKey =
                    serde_json::from_slice(bytes).map_err(|e| format!("api key record: {e}"))?;
                if IssuedKey::record_key(&k.tenant, &k.id) != record_key {
                    return Err("api key record: its key is not its tenant and id".into());
                }
                Some(principal_of(
                    "api key", k.id, &k.tenant, k.role, k.creator, &k.sha256,
                )?)
            }
        };
        let mut issued = self
            .issued
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if issued
            .applied_at
            .get(record_key)
            .is_some_and(|&at| at >= offset)
        {
            return Ok(false);
        }
        issued.applied_at.insert(record_key.to_owned(), offset);
        if let Some(old) = issued.hash_of.remove(record_key) {
            issued.by_hash.remove(&old);
        }
        if let Some((hash, principal)) = added {
            issued.hash_of.insert(record_key.to_owned(), hash.clone());
            issued.by_hash.insert(hash, principal);
        }
        Ok(true)
    }

    /// Whether a key is issued (and not revoked) under this tenant and id, as far as
    /// this store has read the topic.
    pub fn is_issued(&self, tenant: &str, id: &str) -> bool {
        self.issued
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hash_of
            .contains_key(&IssuedKey::record_key(tenant, id))
    }

    /// Reads the `api-keys` topic at `brokers` to its end (waiting at most `startup`),
    /// then follows it in the background until `shutdown`, applying every record. When
    /// the end is not reached in time (Kafka down, topic missing) it says so and goes on
    /// reading in the background: until then only the key file's keys work.
    pub async fn follow(
        &self,
        brokers: &str,
        topic: &str,
        startup: Duration,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, KeyFeedError> {
        let feed = KeyFeed::new(brokers, topic)?;
        let deadline = Instant::now() + startup;
        let mut last_error = None;
        loop {
            match feed.poll(self) {
                Ok(Poll::End(n)) => {
                    tracing::info!(records = n, topic, "issued api keys loaded");
                    break;
                }
                Ok(Poll::More) => continue,
                Ok(Poll::Idle) => {}
                // Kafka may still be starting: errors are retried like silence.
                Err(e) => last_error = Some(e.to_string()),
            }
            if Instant::now() >= deadline {
                tracing::warn!(topic, waited = ?startup, last_error = ?last_error, "issued api keys not read to their end yet (is the topic created? `payoff migrate`); only the key file's keys work until then");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let store = self.clone();
        Ok(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing: Option<String> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                loop {
                    match feed.poll(&store) {
                        Ok(Poll::More) => failing = None,
                        Ok(Poll::End(_) | Poll::Idle) => break,
                        Err(e) => {
                            // Once per kind of failure, not every 100 ms while Kafka is down.
                            let e = e.to_string();
                            if failing.as_ref() != Some(&e) {
                                tracing::error!(error = %e, "api key feed failed, retrying");
                                failing = Some(e);
                            }
                            break;
                        }
                    }
                }
            }
        }))
    }
}

/// The `api-keys` topic could not be read.
#[derive(Debug, thiserror::Error)]
#[error("api keys topic: {0}")]
pub struct KeyFeedError(String);

enum Poll {
    /// A record was applied; more may be waiting.
    More,
    /// At the end of the topic, after `n` records in all.
    End(usize),
    /// Nothing arrived.
    Idle,
}

/// A reader of the `api-keys` topic (one partition) from its beginning.
struct KeyFeed {
    consumer: BaseConsumer<adapters::QuietEof>,
    read: std::cell::Cell<usize>,
}

impl KeyFeed {
    fn new(brokers: &str, topic: &str) -> Result<Self, KeyFeedError> {
        let mut config = adapters::read_committed_consumer_config(
            brokers,
            "payoff-api-keys",
            adapters::StartFrom::Earliest,
        )
        .map_err(|e| KeyFeedError(e.to_string()))?;
        config
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "50");
        let consumer: BaseConsumer<adapters::QuietEof> = config
            .create_with_context(adapters::QuietEof)
            .map_err(|e| KeyFeedError(format!("consumer: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| KeyFeedError(format!("assignment: {e}")))?;
        consumer
            .assign(&tpl)
            .map_err(|e| KeyFeedError(format!("assign: {e}")))?;
        Ok(Self {
            consumer,
            read: std::cell::Cell::new(0),
        })
    }

    fn poll(&self, store: &KeyStore) -> Result<Poll, KeyFeedError> {
        match self.consumer.poll(Duration::ZERO) {
            Some(Ok(msg)) => {
                self.read.set(self.read.get() + 1);
                let key = msg
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .unwrap_or_default();
                match store.apply_issued(key, msg.payload(), msg.offset()) {
                    Ok(true) => tracing::info!(
                        key = %key.replace(topology::KEY_SEPARATOR, "/"),
                        revoked = msg.payload().is_none(),
                        "api key record applied"
                    ),
                    Ok(false) => tracing::debug!(
                        key = %key.replace(topology::KEY_SEPARATOR, "/"),
                        offset = msg.offset(),
                        "api key record older than the one applied, skipped"
                    ),
                    Err(e) => {
                        tracing::error!(offset = msg.offset(), error = %e, "api key record unusable, skipped")
                    }
                }
                Ok(Poll::More)
            }
            Some(Err(KafkaError::PartitionEOF(_))) => Ok(Poll::End(self.read.get())),
            Some(Err(e)) => Err(KeyFeedError(e.to_string())),
            None => Ok(Poll::Idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_creator_key_names_a_creator_and_it_must_name_one() {
        let rule = |role, creator| key_creator(role, creator, "creator").map_err(|v| v.rule);
        assert_eq!(
            rule(Role::Creator, Some("anna")).map(|c| c.map(|c| c.as_str().to_owned())),
            Ok(Some("anna".to_owned()))
        );
        assert_eq!(rule(Role::Creator, None), Err("required"));
        assert_eq!(rule(Role::Creator, Some("")), Err("required"));
        assert_eq!(
            rule(Role::Creator, Some("an\u{7}na")),
            Err("control_character")
        );
        for role in [Role::Ingest, Role::Read, Role::Admin] {
            assert_eq!(rule(role, None), Ok(None));
            assert_eq!(rule(role, Some("")), Err("not_allowed"));
            assert_eq!(rule(role, Some("anna")), Err("not_allowed"));
        }
    }

    fn metadata(header: &'static str, value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(header, value.parse().unwrap());
        m
    }

    #[test]
    fn keys_are_checked_by_hash_and_carry_tenant_and_role() {
        let dir = std::env::temp_dir().join(format!("payoff-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        let text = format!(
            r#"{{"keys":[{{"id":"shop","tenant":"acme","role":"ingest","sha256":"{}"}},{{"id":"anna","tenant":"acme","role":"creator","creator":"anna","sha256":"{}"}}]}}"#,
            hash_secret("s3cret"),
            hash_secret("anna-secret")
        );
        std::fs::write(&path, text).unwrap();
        let store = KeyStore::load(&path).unwrap();
        let p = store
            .authenticate(&metadata("authorization", "Bearer s3cret"))
            .unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("acme", Role::Ingest));
        let p = store
            .authenticate(&metadata("x-api-key", "anna-secret"))
            .unwrap();
        assert_eq!(p.creator.unwrap().as_str(), "anna");
        assert!(matches!(
            store.authenticate(&metadata("authorization", "Bearer nope")),
            Err(ServiceError::Unauthenticated)
        ));
        assert!(matches!(
            store.authenticate(&MetadataMap::new()),
            Err(ServiceError::Unauthenticated)
        ));

        // Rotation: the old secret stops working once the file changes and is reloaded.
        std::fs::write(
            &path,
            format!(
                r#"{{"keys":[{{"id":"shop","tenant":"acme","role":"ingest","sha256":"{}"}}]}}"#,
                hash_secret("new")
            ),
        )
        .unwrap();
        store.reload(&path).unwrap();
        assert!(
            store
                .authenticate(&metadata("authorization", "Bearer s3cret"))
                .is_err()
        );
        assert!(
            store
                .authenticate(&metadata("authorization", "Bearer new"))
                .is_ok()
        );

        // A broken file keeps the previous keys.
        std::fs::write(&path, "{").unwrap();
        assert!(store.reload(&path).is_err());
        assert!(
            store
                .authenticate(&metadata("authorization", "Bearer new"))
                .is_ok()
        );
    }

    #[test]
    fn issued_keys_are_added_replaced_and_revoked_by_record() {
        let store = KeyStore::default();
        let bearer = |s: &str| metadata("authorization", &format!("Bearer {s}"));
        let record = |id: &str, secret: &str| {
            serde_json::to_vec(&IssuedKey {
                id: id.into(),
                tenant: "acme".into(),
                role: Role::Read,
                creator: None,
                sha256: hash_secret(secret),
                description: String::new(),
                issued_at: 0,
            })
            .unwrap()
        };
        let key = IssuedKey::record_key("acme", "dash");
        store
            .apply_issued(&key, Some(&record("dash", "one")), 0)
            .unwrap();
        assert!(store.is_issued("acme", "dash"));
        let p = store.authenticate(&bearer("one")).unwrap();
        assert_eq!((p.key_id.as_str(), p.role), ("dash", Role::Read));
        // Re-issued under the same id: the old secret stops working.
        store
            .apply_issued(&key, Some(&record("dash", "two")), 1)
            .unwrap();
        assert!(store.authenticate(&bearer("one")).is_err());
        assert!(store.authenticate(&bearer("two")).is_ok());
        // A record whose key is not its tenant and id changes nothing.
        assert!(
            store
                .apply_issued(
                    &IssuedKey::record_key("acme", "other"),
                    Some(&record("dash", "three")),
                    2
                )
                .is_err()
        );
        assert!(store.authenticate(&bearer("three")).is_err());
        // A tombstone revokes.
        store.apply_issued(&key, None, 3).unwrap();
        assert!(!store.is_issued("acme", "dash"));
        assert!(store.authenticate(&bearer("two")).is_err());
        // Issued again, and applied at once by the service that wrote it (offset 5): the
        // topic's reader, still behind, then reads the tombstone and the first issue
        // again, which change nothing; the new record itself changes nothing either.
        assert!(
            store
                .apply_issued(&key, Some(&record("dash", "four")), 5)
                .unwrap()
        );
        assert!(!store.apply_issued(&key, None, 3).unwrap());
        assert!(
            !store
                .apply_issued(&key, Some(&record("dash", "one")), 0)
                .unwrap()
        );
        assert!(store.authenticate(&bearer("four")).is_ok());
        assert!(store.authenticate(&bearer("one")).is_err());
        assert!(
            !store
                .apply_issued(&key, Some(&record("dash", "four")), 5)
                .unwrap()
        );
        assert!(store.authenticate(&bearer("four")).is_ok());
        assert!(new_secret().unwrap() != new_secret().unwrap());
    }

    #[test]
    fn creator_keys_must_name_their_creator() {
        let text = format!(
            r#"{{"keys":[{{"id":"c","tenant":"acme","role":"creator","sha256":"{}"}}]}}"#,
            hash_secret("x")
        );
        assert!(parse(Path::new("k.json"), &text).is_err());
    }
}
