//! Cache keys. A response key is a SHA-256 over a version, the document's hash, the
//! operation name, the variables in canonical form (object keys sorted, so key order never
//! matters) and the scope: `public`, or the hash of the token for private results. It starts
//! with the operation's *placement* (the same hash without the scope, cut to 16 hex digits,
//! then `/`): on a Redis Cluster it picks the partition (`storage::cluster`), so every scope
//! of one operation shares one invalidation sequence.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Changes whenever what an entry under a key means changes, so no older entry is read (v3:
/// a private entry carries its owner's token tag, which is what lets it answer unchecked;
/// v4: an entry may carry its body's stored codings, which a v3 reader would take for body).
const KEY_VERSION: &str = "v4";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Public,
    /// Keyed to the SHA-256 of the bearer token; the token itself never reaches the cache.
    Private(String),
}

/// SHA-256 of a GraphQL document, hex encoded (also the APQ hash of that document).
pub fn document_hash(query: &str) -> String {
    hex_string(&Sha256::digest(query.as_bytes()))
}

/// Lower-case hex of up to 32 bytes, written in one go (`hex::encode` collects characters one
/// by one: about 2,000 instructions per digest, and a hit hashes three or four times).
pub fn hex_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buffer = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let written = &mut buffer[..chunk.len() * 2];
        if hex::encode_to_slice(chunk, written).is_ok() {
            out.push_str(std::str::from_utf8(written).unwrap_or_default());
        }
    }
}

/// The key of a cached response: `resp:`, the placement, `/` and a SHA-256 over the document
/// hash, the operation name, the variables in canonical form and the scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResponseKey(String);

impl ResponseKey {
    pub fn new(
        document: &str,
        operation_name: Option<&str>,
        variables: &Value,
        scope: &Scope,
    ) -> Self {
        ResponseKey(response_key(document, operation_name, variables, scope))
    }

    /// The key in the backend (without the server's prefix).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash alone: the identity of a public operation in the monitor's records.
    pub fn id(&self) -> &str {
        self.0.strip_prefix(RESPONSE_KEY_PREFIX).unwrap_or(&self.0)
    }
}

const RESPONSE_KEY_PREFIX: &str = "resp:";

fn response_key(
    document: &str,
    operation_name: Option<&str>,
    variables: &Value,
    scope: &Scope,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(KEY_VERSION);
    hasher.update([0]);
    hasher.update(document);
    hasher.update([0]);
    hasher.update(operation_name.unwrap_or(""));
    hasher.update([0]);
    write_canonical(&mut hasher, variables);
    hasher.update([0]);
    let operation = hasher.finalize();
    let mut hasher = Sha256::new();
    hasher.update(operation);
    match scope {
        Scope::Public => hasher.update("public"),
        Scope::Private(token_hash) => {
            hasher.update("private:");
            hasher.update(token_hash);
        }
    }
    let mut key = String::with_capacity(RESPONSE_KEY_PREFIX.len() + 16 + 1 + 64);
    key.push_str(RESPONSE_KEY_PREFIX);
    push_hex(&mut key, &operation[..8]);
    key.push('/');
    push_hex(&mut key, &hasher.finalize());
    key
}

/// Feeds `value` to the hasher as JSON with object keys in sorted order.
fn write_canonical(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update("{");
            for key in keys {
                hasher.update(serde_json::to_string(key).unwrap_or_default());
                hasher.update(":");
                write_canonical(hasher, &map[key]);
                hasher.update(",");
            }
            hasher.update("}");
        }
        Value::Array(items) => {
            hasher.update("[");
            for item in items {
                write_canonical(hasher, item);
                hasher.update(",");
            }
            hasher.update("]");
        }
        Value::Null => hasher.update("null"),
        other => hasher.update(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_strings_match_the_hex_crate() {
        let digest = Sha256::digest(b"catalog");
        for bytes in [&digest[..], &digest[..8], &digest[..0]] {
            assert_eq!(hex_string(bytes), hex::encode(bytes));
        }
    }
    use serde_json::json;

    #[test]
    fn variable_key_order_does_not_matter_but_values_and_scope_do() {
        let document = document_hash("query { products { totalCount } }");
        let a = response_key(
            &document,
            None,
            &json!({"a": 1, "b": {"x": 1, "y": 2}}),
            &Scope::Public,
        );
        let b = response_key(
            &document,
            None,
            &json!({"b": {"y": 2, "x": 1}, "a": 1}),
            &Scope::Public,
        );
        assert_eq!(a, b);
        let private = response_key(
            &document,
            None,
            &json!({"a": 1, "b": {"x": 1, "y": 2}}),
            &Scope::Private("t".into()),
        );
        assert_eq!(
            crate::cache::storage::cluster::placement(&a),
            crate::cache::storage::cluster::placement(&private),
            "one operation's scopes share a placement"
        );
        assert_ne!(
            a,
            response_key(
                &document,
                None,
                &json!({"a": 2, "b": {"x": 1, "y": 2}}),
                &Scope::Public
            )
        );
        assert_ne!(
            a,
            response_key(
                &document,
                None,
                &json!({"a": 1, "b": {"x": 1, "y": 2}}),
                &Scope::Private("t".into())
            )
        );
        assert_ne!(
            a,
            response_key(
                &document,
                Some("Op"),
                &json!({"a": 1, "b": {"x": 1, "y": 2}}),
                &Scope::Public
            )
        );
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|number| json!(number)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// The same object with its keys in reverse insertion order, all the way down.
    fn reordered(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .rev()
                    .map(|(key, value)| (key.clone(), reordered(value)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(reordered).collect()),
            other => other.clone(),
        }
    }

    proptest::proptest! {
        /// Variables canonicalize: key order never changes the key, any other change does.
        #[test]
        fn variable_order_never_matters(variables in json_value()) {
            let document = document_hash("query Q { products { totalCount } }");
            let key = |variables: &Value| response_key(&document, None, variables, &Scope::Public);
            proptest::prop_assert_eq!(key(&variables), key(&reordered(&variables)));
            let wrapped = json!({ "wrapped": variables.clone() });
            proptest::prop_assert_ne!(key(&variables), key(&wrapped));
        }
    }
}
