//! Requests recognized by their bytes. A public query answered from (or stored in) the cache
//! leaves behind the SHA-256 of its raw request (the POST body or the GET query string) and
//! the response key it was answered under; the same bytes from an anonymous client then go
//! straight to that key's lookup, with no JSON parsing, no document hash and no key
//! canonicalization. The lookup is the ordinary one, so freshness is proven exactly as for
//! any other request: anything but a fresh entry sends the request the whole way.
//!
//! Bounded: at most `CAPACITY` fingerprints (least recently used forgotten first), each a
//! 32-byte hash, a response key and an operation label: under 4 MiB.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::cache::Policy;
use crate::cache::insights::DocumentId;
use crate::cache::key::ResponseKey;
use crate::graphql::executor::Transport;

/// The SHA-256 of a request's transport and raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(transport: Transport, raw: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(match transport {
            Transport::Get => b"GET ",
            Transport::Post => b"POST",
        });
        hasher.update(raw);
        Fingerprint(hasher.finalize().into())
    }
}

/// What a recognized request is answered as.
#[derive(Debug)]
pub struct Recognized {
    pub key: ResponseKey,
    pub policy: Policy,
    pub operation_name: Option<String>,
    /// The operation's label in `/metrics`.
    pub label: String,
    /// The document it runs, for the cache insights.
    pub document: Option<DocumentId>,
}

pub struct RecognizedRequests {
    known: moka::sync::Cache<Fingerprint, Arc<Recognized>>,
}

impl RecognizedRequests {
    /// Fingerprints kept at most.
    pub const CAPACITY: u64 = 10_000;

    pub fn new() -> Self {
        RecognizedRequests {
            known: moka::sync::Cache::new(Self::CAPACITY),
        }
    }

    pub fn get(&self, fingerprint: &Fingerprint) -> Option<Arc<Recognized>> {
        self.known.get(fingerprint)
    }

    /// Remembers that `fingerprint`'s request is answered by the public entry under `key`.
    /// Only public results are remembered, and only requests without credentials look here,
    /// so no private entry is ever reached this way.
    pub fn remember(
        &self,
        fingerprint: Fingerprint,
        key: ResponseKey,
        policy: Policy,
        operation_name: Option<String>,
        label: String,
        document: Option<DocumentId>,
    ) {
        if policy.private || self.known.contains_key(&fingerprint) {
            return;
        }
        let recognized = Recognized {
            key,
            policy,
            operation_name,
            label,
            document,
        };
        self.known.insert(fingerprint, Arc::new(recognized));
    }

    /// Fingerprints held now (for tests of the bound).
    pub fn len(&self) -> u64 {
        self.known.run_pending_tasks();
        self.known.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for RecognizedRequests {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::Scope;

    #[test]
    fn the_fingerprints_kept_stay_within_the_capacity() {
        let recognized = RecognizedRequests::new();
        let policy = Policy {
            max_age: 60,
            private: false,
        };
        let key = ResponseKey::new("document", None, &serde_json::json!({}), &Scope::Public);
        for n in 0..3 * RecognizedRequests::CAPACITY {
            let body = format!("{{\"query\":\"{{ product(id: {n}) {{ id }} }}\"}}");
            let fingerprint = Fingerprint::of(Transport::Post, body.as_bytes());
            recognized.remember(
                fingerprint,
                key.clone(),
                policy,
                None,
                "anonymous".into(),
                None,
            );
        }
        assert!(recognized.len() <= RecognizedRequests::CAPACITY);
        assert!(recognized.len() > RecognizedRequests::CAPACITY / 2);
    }

    #[test]
    fn private_results_are_never_remembered_and_transports_never_share_a_fingerprint() {
        let recognized = RecognizedRequests::new();
        let key = ResponseKey::new("document", None, &serde_json::json!({}), &Scope::Public);
        let fingerprint = Fingerprint::of(Transport::Post, b"query=x");
        let private = Policy {
            max_age: 60,
            private: true,
        };
        recognized.remember(fingerprint, key, private, None, "anonymous".into(), None);
        assert!(recognized.get(&fingerprint).is_none());
        assert_ne!(fingerprint, Fingerprint::of(Transport::Get, b"query=x"));
    }
}
