//! Bearer tokens: generation, hashing, validation and the guard on protected fields.
//!
//! A token is 256 random bits from the operating system's CSPRNG, shown once. Only its
//! SHA-256 is stored or cached, so neither the database nor the cache can leak a token.

pub mod revocations;

use std::sync::Arc;

use async_graphql::{Context, Guard};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use sha2::{Digest, Sha256};

use crate::cache::TokenLookup;
use crate::catalog::clock::now;
use crate::entities::api_token;
use crate::error::ApiError;

const TOKEN_PREFIX: &str = "cat_";

/// Who is asking. Private cache entries are keyed to the token's SHA-256 (`token_hash`),
/// never to the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    Token { token_id: i32, token_hash: String },
}

impl Principal {
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Principal::Token { .. })
    }
}

pub fn hash_token(token: &str) -> String {
    crate::cache::key::hex_string(&Sha256::digest(token.as_bytes()))
}

pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The bearer token of an `Authorization` header value, or an error for any other shape.
pub fn bearer_token(header: &str) -> Result<&str, ApiError> {
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or(ApiError::InvalidToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 256 {
        return Err(ApiError::InvalidToken);
    }
    Ok(token)
}

/// The unrevoked token with this hash, if any.
pub async fn find_active<C: ConnectionTrait>(
    db: &C,
    token_hash: &str,
) -> Result<Option<api_token::Model>, DbErr> {
    api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(token_hash))
        .filter(api_token::Column::RevokedAt.is_null())
        .one(db)
        .await
}

/// Creates a token and returns it with its record; the token is not recoverable afterwards.
pub async fn create<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> Result<(String, api_token::Model), ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_input("a token name has 1 to 100 characters"));
    }
    let token =
        generate_token().map_err(|error| ApiError::Internal(format!("random source: {error}")))?;
    let record = api_token::ActiveModel {
        name: Set(name.to_owned()),
        token_hash: Set(hash_token(&token)),
        created_at: Set(now()),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok((token, record))
}

pub async fn list<C: ConnectionTrait>(db: &C) -> Result<Vec<api_token::Model>, DbErr> {
    api_token::Entity::find()
        .order_by_asc(api_token::Column::Id)
        .all(db)
        .await
}

/// Tokens revoked at or after `since`, oldest first (a range read on `revoked_at`'s index):
/// how every server learns of revocations that did not reach its cache.
pub async fn revoked_since<C: ConnectionTrait>(
    db: &C,
    since: DateTime<Utc>,
) -> Result<Vec<api_token::Model>, DbErr> {
    api_token::Entity::find()
        .filter(api_token::Column::RevokedAt.gte(since))
        .order_by_asc(api_token::Column::RevokedAt)
        .all(db)
        .await
}

/// Marks a token revoked and returns its hash, so callers can drop it from caches at once.
pub async fn revoke<C: ConnectionTrait>(db: &C, id: i32) -> Result<String, ApiError> {
    let record = api_token::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("token {id} does not exist")))?;
    let token_hash = record.token_hash.clone();
    if record.revoked_at.is_none() {
        let mut active: api_token::ActiveModel = record.into();
        active.revoked_at = Set(Some(now()));
        active.update(db).await?;
    }
    Ok(token_hash)
}

/// Guards fields that need a valid token (mutations, dashboard statistics).
pub struct RequireToken;

impl Guard for RequireToken {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Principal>() {
            Some(principal) if principal.is_authenticated() => Ok(()),
            _ => Err(ApiError::Unauthenticated.into()),
        }
    }
}

/// What a request presents: no token, or the SHA-256 of its bearer token. Read from the
/// header without any I/O, and checked at most once per request, only when something needs
/// the `Principal`: a fresh private entry proves its owner's token by its own tag (it
/// carries `Token:<hash>`, which revocation stamps), so a hit on one needs no token lookup.
#[derive(Debug, Clone)]
pub struct Credentials {
    token_hash: Option<String>,
    checked: Arc<tokio::sync::OnceCell<Principal>>,
}

impl Credentials {
    pub fn anonymous() -> Self {
        Credentials {
            token_hash: None,
            checked: Arc::new(tokio::sync::OnceCell::new_with(Some(Principal::Anonymous))),
        }
    }

    /// Credentials already checked (the warm-up command authenticates before it runs).
    pub fn checked(principal: Principal) -> Self {
        let token_hash = match &principal {
            Principal::Token { token_hash, .. } => Some(token_hash.clone()),
            Principal::Anonymous => None,
        };
        Credentials {
            token_hash,
            checked: Arc::new(tokio::sync::OnceCell::new_with(Some(principal))),
        }
    }

    /// No header is an anonymous caller; a header of any other shape than `Bearer <token>`
    /// is an error at once.
    pub fn from_header(header: Option<&axum::http::HeaderValue>) -> Result<Self, ApiError> {
        let Some(header) = header else {
            return Ok(Credentials::anonymous());
        };
        let header = header.to_str().map_err(|_| ApiError::InvalidToken)?;
        Ok(Credentials {
            token_hash: Some(hash_token(bearer_token(header)?)),
            checked: Arc::default(),
        })
    }

    /// The hash of the token presented, valid or not.
    pub fn claimed_token_hash(&self) -> Option<&str> {
        self.token_hash.as_deref()
    }
}

/// Checks credentials, consulting the token cache first.
#[derive(Clone)]
pub struct Authenticator {
    db: sea_orm::DatabaseConnection,
    cache: Option<crate::cache::ResponseCache>,
    /// While the database is known to be down, a token the cache does not know is refused
    /// at once with `SERVICE_UNAVAILABLE` instead of waiting for a connection.
    breaker: crate::db::breaker::DatabaseBreaker,
}

impl Authenticator {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        cache: Option<crate::cache::ResponseCache>,
        breaker: crate::db::breaker::DatabaseBreaker,
    ) -> Self {
        Authenticator { db, cache, breaker }
    }

    /// An `Authorization` header's principal: anonymous without one; a bad or revoked token
    /// is an error, whatever the operation, so a client never silently loses its identity.
    pub async fn authenticate(
        &self,
        header: Option<&axum::http::HeaderValue>,
    ) -> Result<Principal, ApiError> {
        self.principal(&Credentials::from_header(header)?).await
    }

    /// The principal behind `credentials`, checked on the first call of a request.
    pub async fn principal(&self, credentials: &Credentials) -> Result<Principal, ApiError> {
        let principal = credentials
            .checked
            .get_or_try_init(|| async {
                match &credentials.token_hash {
                    Some(token_hash) => self.check(token_hash).await,
                    None => Ok(Principal::Anonymous),
                }
            })
            .await?;
        Ok(principal.clone())
    }

    async fn check(&self, token_hash: &str) -> Result<Principal, ApiError> {
        let token_hash = token_hash.to_owned();
        let mut fill_seq = None;
        if let Some(cache) = &self.cache {
            match cache.token_lookup(&token_hash).await {
                TokenLookup::Valid(token_id) => {
                    return Ok(Principal::Token {
                        token_id,
                        token_hash,
                    });
                }
                TokenLookup::Unknown { seq } => fill_seq = seq,
            }
        }
        if self.breaker.refuses() {
            return Err(ApiError::ServiceUnavailable);
        }
        let record = find_active(&self.db, &token_hash)
            .await?
            .ok_or(ApiError::InvalidToken)?;
        if let (Some(cache), Some(seq)) = (&self.cache, fill_seq) {
            cache.remember_token(&token_hash, record.id, seq).await;
        }
        Ok(Principal::Token {
            token_id: record.id,
            token_hash,
        })
    }
}
