//! A bounded cache of recently accepted event ids, to answer repeats as duplicates fast.
//! The attributor remains the authority on duplicates (§10): correctness never depends on
//! this cache, which forgets the oldest ids first and is lost on restart.

use std::{num::NonZeroUsize, sync::Mutex};

use lru::LruCache;

/// Recently accepted (tenant, event id) pairs.
pub struct RecentIds {
    cache: Mutex<LruCache<(String, String), ()>>,
}

impl RecentIds {
    /// A cache of at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Whether the id was accepted recently.
    pub fn contains(&self, tenant: &str, event_id: &str) -> bool {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(&(tenant.to_owned(), event_id.to_owned()))
            .is_some()
    }

    /// Remembers an accepted id.
    pub fn insert(&self, tenant: &str, event_id: &str) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.put((tenant.to_owned(), event_id.to_owned()), ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_tenant_and_forgets_the_oldest() {
        let ids = RecentIds::new(2);
        ids.insert("a", "1");
        ids.insert("a", "2");
        assert!(ids.contains("a", "1"));
        assert!(!ids.contains("b", "1"));
        ids.insert("a", "3");
        assert!(!ids.contains("a", "2"), "least recently used goes first");
    }
}
