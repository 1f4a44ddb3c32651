//! API keys (§11): per tenant, with a role, stored hashed, reloadable without restart.
//!
//! The key file is JSON: `{"keys": [{"id": "shop-1", "tenant": "acme", "role": "ingest",
//! "sha256": "<hex SHA-256 of the secret>"}, {"id": "anna", "tenant": "acme", "role":
//! "creator", "creator": "anna", "sha256": "..."}]}`. Secrets never appear in it. A caller
//! presents the secret as `authorization: Bearer <secret>` (or `x-api-key: <secret>`).
//! [`KeyStore::watch`] re-reads the file when it changes; a file that fails to parse is
//! reported and the previous keys stay in force.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use payoff_core::ids::{CreatorId, TenantId};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;

use crate::error::ServiceError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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

fn parse(path: &Path, text: &str) -> Result<HashMap<String, Principal>, KeyFileError> {
    let invalid = |reason: String| KeyFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let file: KeyFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut keys = HashMap::new();
    for (i, k) in file.keys.into_iter().enumerate() {
        let tenant = TenantId::parse(&format!("keys[{i}].tenant"), &k.tenant)
            .map_err(|e| invalid(e.to_string()))?;
        let creator = match (&k.role, k.creator) {
            (Role::Creator, Some(c)) => Some(
                CreatorId::parse(&format!("keys[{i}].creator"), &c)
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            (Role::Creator, None) => {
                return Err(invalid(format!(
                    "keys[{i}]: a creator key needs \"creator\""
                )));
            }
            (_, Some(_)) => {
                return Err(invalid(format!(
                    "keys[{i}]: only creator keys name a creator"
                )));
            }
            (_, None) => None,
        };
        let hash = k.sha256.to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!("keys[{i}].sha256 must be 64 hex digits")));
        }
        if keys
            .insert(
                hash,
                Principal {
                    key_id: k.id,
                    tenant,
                    role: k.role,
                    creator,
                },
            )
            .is_some()
        {
            return Err(invalid(format!(
                "keys[{i}]: the same secret hash appears twice"
            )));
        }
    }
    Ok(keys)
}

/// The keys in force, swapped whole on reload.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: Arc<RwLock<Arc<HashMap<String, Principal>>>>,
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
        keys.get(&hash_secret(secret))
            .cloned()
            .ok_or(ServiceError::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn creator_keys_must_name_their_creator() {
        let text = format!(
            r#"{{"keys":[{{"id":"c","tenant":"acme","role":"creator","sha256":"{}"}}]}}"#,
            hash_secret("x")
        );
        assert!(parse(Path::new("k.json"), &text).is_err());
    }
}
