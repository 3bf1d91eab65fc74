//! The persisted query manifest (`CATALOG_PERSISTED_ONLY`): Apollo's persisted query list,
//! read once at start-up into the safelist the executor enforces (only these documents, by
//! SHA-256, may run). It lives beside the executor that uses it; a manifest whose ids are not
//! its documents' hashes is refused before the server listens.

use std::collections::HashMap;

use crate::cache::key::document_hash;

/// A manifest that cannot be read or does not hold what it claims.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the persisted query manifest {path}: {reason}")]
pub struct ManifestError {
    pub path: String,
    pub reason: String,
}

/// Reads an Apollo persisted query manifest into a map from document SHA-256 to document.
pub fn load_manifest(path: &std::path::Path) -> Result<HashMap<String, String>, ManifestError> {
    let fail = |reason: String| ManifestError {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| fail(error.to_string()))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| fail(error.to_string()))?;
    let operations = manifest
        .get("operations")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| {
            fail("no `operations` array (expected Apollo's persisted query list format)".into())
        })?;
    let mut documents = HashMap::new();
    for operation in operations {
        let body = operation
            .get("body")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| fail("an operation has no `body`".into()))?;
        let hash = document_hash(body);
        if let Some(id) = operation.get("id").and_then(serde_json::Value::as_str)
            && id != hash
        {
            return Err(fail(format!(
                "operation id {id} is not the SHA-256 of its body"
            )));
        }
        documents.insert(hash, body.to_owned());
    }
    Ok(documents)
}
