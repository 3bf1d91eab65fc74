//! The bytes of an executed operation's response, shaped as the specs ask: fields in the
//! order the query selected them (`response_order`), a failed field answered `null` in its
//! place (`field_errors`), and no `data` entry at all when the request failed before
//! execution (a parse, validation or variable error), which is what tells a
//! GraphQL-over-HTTP client that nothing ran.

use bytes::Bytes;
use serde::Serialize;

use super::field_errors;
use super::response_order::ResponseOrder;

/// A response ready to send.
pub struct EncodedResponse {
    pub body: Bytes,
    /// True when the body has no `data` entry: the operation never executed.
    pub data_absent: bool,
}

/// The shape of a request error: errors (and extensions), no `data`.
#[derive(Serialize)]
struct RequestError<'a> {
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

/// Serializes `response`, reordering its data by `order` first.
pub fn encode(
    response: &mut async_graphql::Response,
    order: Option<&ResponseOrder>,
) -> EncodedResponse {
    // Execution errors carry the path of the field that failed; errors without one arose
    // before execution. A `null` data with a path error is a real result and is kept.
    let data_absent = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty());
    let body = if data_absent {
        serde_json::to_vec(&RequestError {
            errors: &response.errors,
            extensions: &response.extensions,
        })
    } else {
        if let Some(order) = order {
            if !response.errors.is_empty() {
                field_errors::complete(&mut response.data, &response.errors, order);
            }
            order.apply(&mut response.data);
        }
        serde_json::to_vec(&*response)
    };
    EncodedResponse {
        body: Bytes::from(body.unwrap_or_default()),
        data_absent,
    }
}
