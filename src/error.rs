//! The errors a client can see, and their one mapping to GraphQL `extensions.code`.
//!
//! Resolvers return `ApiError`; `?` turns it into an async-graphql error that keeps the
//! `ApiError` as its source, and `assign_code` (run on every response) reads the code from
//! there: `code()` is the only table of codes. Internal errors are logged with the request id
//! and reach the client only as "internal server error" plus that id, never with internals.

use sea_orm::{DbErr, SqlErr};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadUserInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    #[error("the bearer token is invalid or revoked")]
    InvalidToken,
    #[error("{0}")]
    Conflict(String),
    #[error("PersistedQueryNotFound")]
    PersistedQueryNotFound,
    #[error("the provided sha256Hash does not match the query")]
    PersistedQueryHashMismatch,
    #[error("only persisted operations may run on this server")]
    PersistedQueryNotAllowed,
    #[error("the database is unavailable; retry shortly")]
    ServiceUnavailable,
    #[error("internal server error")]
    Internal(String),
}

/// Every code a client can receive, so that tests and documentation use one list.
pub mod codes {
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const CONFLICT: &str = "CONFLICT";
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    pub const PERSISTED_QUERY_NOT_ALLOWED: &str = "PERSISTED_QUERY_NOT_ALLOWED";
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
    pub const TIMEOUT: &str = "TIMEOUT";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadUserInput(_) | ApiError::PersistedQueryHashMismatch => {
                codes::BAD_USER_INPUT
            }
            ApiError::NotFound(_) => codes::NOT_FOUND,
            ApiError::Unauthenticated | ApiError::InvalidToken => codes::UNAUTHENTICATED,
            ApiError::Conflict(_) => codes::CONFLICT,
            ApiError::PersistedQueryNotFound => codes::PERSISTED_QUERY_NOT_FOUND,
            ApiError::PersistedQueryNotAllowed => codes::PERSISTED_QUERY_NOT_ALLOWED,
            ApiError::ServiceUnavailable => codes::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => codes::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        ApiError::BadUserInput(message.into())
    }
}

impl ApiError {
    /// The one mapping of database errors: constraint violations are the client's conflict;
    /// no connection (pool timeout, refused, reset) is the database being away, which a
    /// retry may fix; anything else is ours.
    pub fn from_database(error: &DbErr) -> Self {
        use sea_orm::sqlx::Error as SqlxError;
        use sea_orm::{DbErr as E, RuntimeErr};
        match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                return ApiError::Conflict("a record with this value already exists".into());
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                return ApiError::Conflict("the record is referenced by other records".into());
            }
            _ => {}
        }
        if matches!(error, DbErr::RecordNotUpdated) {
            // A concurrent delete removed the row between its read and this write.
            return ApiError::NotFound("the record no longer exists".into());
        }
        let unavailable = match error {
            E::ConnectionAcquire(_) | E::Conn(_) => true,
            E::Exec(RuntimeErr::SqlxError(sqlx)) | E::Query(RuntimeErr::SqlxError(sqlx)) => {
                matches!(
                    sqlx.as_ref(),
                    SqlxError::Io(_)
                        | SqlxError::PoolTimedOut
                        | SqlxError::PoolClosed
                        | SqlxError::WorkerCrashed
                )
            }
            _ => false,
        };
        if unavailable {
            // Logged once per outage by the database breaker, not once per request.
            ApiError::ServiceUnavailable
        } else {
            ApiError::Internal(format!("database: {error}"))
        }
    }
}

impl From<DbErr> for ApiError {
    fn from(error: DbErr) -> Self {
        ApiError::from_database(&error)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Where in async-graphql's pipeline an error without a code arose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Parse,
    Validation,
    /// Execution errors without a code come from async-graphql's input coercion
    /// (a string where an Int belongs, an unparsable Decimal): the client's input.
    Execution,
}

/// Gives every error a code: the rest of this table, for errors async-graphql raised itself.
pub fn assign_code(error: &mut async_graphql::ServerError, phase: Phase, request_id: Option<&str>) {
    let from_source = error.source::<ApiError>().map(|api_error| {
        if let ApiError::Internal(detail) = api_error {
            report_internal(detail, request_id);
        }
        api_error.code()
    });
    let extensions = error.extensions.get_or_insert_with(Default::default);
    let code = match extensions.get("code") {
        Some(async_graphql::Value::String(code)) => code.clone(),
        _ => {
            let code = from_source.unwrap_or(match phase {
                Phase::Parse => codes::GRAPHQL_PARSE_FAILED,
                Phase::Validation => codes::GRAPHQL_VALIDATION_FAILED,
                Phase::Execution => codes::BAD_USER_INPUT,
            });
            extensions.set("code", code);
            code.to_owned()
        }
    };
    if code == codes::INTERNAL_SERVER_ERROR
        && let Some(request_id) = request_id
    {
        extensions.set("requestId", request_id);
    }
}

/// The one place an internal error is logged, with the id of the request it answered; the
/// caller then gives the client "internal server error" and that id, never the detail.
pub fn report_internal(detail: &dyn std::fmt::Display, request_id: Option<&str>) {
    tracing::error!(error = %detail, request_id = request_id.unwrap_or("-"), "internal error");
}

/// A GraphQL-shaped error body for failures before execution (bad JSON, wrong method...).
pub fn request_error_body(message: &str, code: &str) -> serde_json::Value {
    serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
}

/// A syntax error as one readable line ("expected a selection set, found `}`"), for
/// async-graphql passes on the parser's multi-line trace (" --> 1:2 | 1 | { | ^---").
/// The position stays in `locations`; other parse errors are already one line.
pub fn readable_syntax_error(
    mut error: async_graphql::ServerError,
    query: &str,
) -> async_graphql::ServerError {
    let Some(expectation) = error
        .message
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("= "))
    else {
        return error;
    };
    let expectation = readable_rule_names(expectation);
    let found = error
        .locations
        .first()
        .map(|position| found_at(query, position.line, position.column))
        .unwrap_or_else(|| "something else".to_owned());
    error.message = format!("syntax error: {expectation}, found {found}");
    error
}

/// Pest's rule names as words: `selection_set` reads "selection set", `EOI` "end of document".
fn readable_rule_names(expectation: &str) -> String {
    let mut text = String::with_capacity(expectation.len());
    let mut word = String::new();
    let flush = |word: &mut String, text: &mut String| {
        if word == "EOI" {
            text.push_str("end of document");
        } else {
            text.push_str(&word.replace('_', " "));
        }
        word.clear();
    };
    for character in expectation.chars() {
        if character.is_ascii_alphanumeric() || character == '_' {
            word.push(character);
        } else {
            flush(&mut word, &mut text);
            text.push(character);
        }
    }
    flush(&mut word, &mut text);
    text
}

/// What the document holds at a 1-based line and column: a name or number whole, one
/// punctuation character, or the end of the document.
fn found_at(query: &str, line: usize, column: usize) -> String {
    let rest: String = query
        .lines()
        .nth(line.saturating_sub(1))
        .map(|text| text.chars().skip(column.saturating_sub(1)).collect())
        .unwrap_or_default();
    let is_word = |character: &char| character.is_alphanumeric() || *character == '_';
    let mut characters = rest.chars();
    match characters.next() {
        None if query.lines().count() <= line => "the end of the document".to_owned(),
        None => "the end of the line".to_owned(),
        Some(first) if is_word(&first) => {
            let word: String = rest.chars().take_while(|c| is_word(c)).take(40).collect();
            format!("`{word}`")
        }
        Some(first) => format!("`{first}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_error(query: &str) -> String {
        let mut request = async_graphql::Request::new(query);
        match request.parsed_query() {
            Ok(_) => panic!("{query:?} parses"),
            Err(error) => readable_syntax_error(error, query).message,
        }
    }

    #[test]
    fn syntax_errors_read_as_one_line() {
        for (query, expected) in [
            (
                "{",
                "syntax error: expected selection, found the end of the document",
            ),
            (
                "{ products { id }",
                "syntax error: expected selection, found the end of the document",
            ),
            (
                "query { products(first: ) { id } }",
                "syntax error: expected value, found `)`",
            ),
            (
                "{ products }}",
                "syntax error: expected end of document or executable definition, found `}`",
            ),
            (
                "mutation { 1 }",
                "syntax error: expected selection, found `1`",
            ),
        ] {
            assert_eq!(syntax_error(query), expected, "for {query:?}");
        }
    }
}
