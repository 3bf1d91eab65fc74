//! The edges a purge can go to, each in its documented request shape and batch limits:
//! Varnish (`PURGE` with the xkey module's `xkey-purge` header, as `deploy/varnish/default.vcl`
//! expects), Fastly (purge by surrogate key, at most 256 keys a request) and Cloudflare
//! (purge by cache tag, at most 100 tags a request).

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};

use crate::config::{Config, EdgePurgeBackend};

/// Fastly: "up to 256 surrogate keys" per request.
pub const FASTLY_KEYS_PER_REQUEST: usize = 256;
/// Cloudflare: at most 100 tags per purge request on every plan.
pub const CLOUDFLARE_TAGS_PER_REQUEST: usize = 100;
/// Bytes of tags in one `xkey-purge` header (Varnish's default header limit is 8 KB).
pub const VARNISH_HEADER_BYTES: usize = 4 * 1024;
/// How long one purge request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("the edge could not be reached: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("the edge answered {status}: {body}")]
    Refused { status: StatusCode, body: String },
}

#[derive(Debug, Clone)]
enum Edge {
    Varnish {
        urls: Vec<String>,
    },
    Fastly {
        purge_url: String,
        api_token: String,
    },
    Cloudflare {
        purge_url: String,
        api_token: String,
    },
}

/// A configured edge and the client that purges it.
#[derive(Debug, Clone)]
pub struct PurgeBackend {
    edge: Edge,
    soft: bool,
    client: Client,
}

impl PurgeBackend {
    /// The configured edge; `None` without one (`Config::validate` checked its settings).
    pub fn from_config(config: &Config) -> Option<Self> {
        let trimmed = |url: &str| url.trim().trim_end_matches('/').to_owned();
        let edge = match config.edge_purge {
            EdgePurgeBackend::None => return None,
            EdgePurgeBackend::Varnish => Edge::Varnish {
                urls: config
                    .edge_varnish_urls
                    .iter()
                    .map(|url| trimmed(url))
                    .filter(|url| !url.is_empty())
                    .collect(),
            },
            EdgePurgeBackend::Fastly => Edge::Fastly {
                purge_url: format!(
                    "{}/service/{}/purge",
                    trimmed(&config.edge_fastly_api_url),
                    config.edge_fastly_service_id.as_deref()?
                ),
                api_token: config.edge_fastly_api_token.clone()?,
            },
            EdgePurgeBackend::Cloudflare => Edge::Cloudflare {
                purge_url: format!(
                    "{}/zones/{}/purge_cache",
                    trimmed(&config.edge_cloudflare_api_url),
                    config.edge_cloudflare_zone_id.as_deref()?
                ),
                api_token: config.edge_cloudflare_api_token.clone()?,
            },
        };
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        Some(PurgeBackend {
            edge,
            soft: config.edge_soft_purge,
            client,
        })
    }

    pub fn name(&self) -> &'static str {
        match self.edge {
            Edge::Varnish { .. } => "varnish",
            Edge::Fastly { .. } => "fastly",
            Edge::Cloudflare { .. } => "cloudflare",
        }
    }

    /// Purges `tags` (edge names); `Ok` once the edge acknowledged every batch. Returns how
    /// many requests it sent.
    pub async fn purge(&self, tags: &[String]) -> Result<usize, PurgeError> {
        let mut requests = 0;
        for batch in self.batches(tags) {
            match &self.edge {
                Edge::Varnish { urls } => {
                    let header = batch.join(" ");
                    for url in urls {
                        self.varnish(url, &header).await?;
                        requests += 1;
                    }
                }
                Edge::Fastly {
                    purge_url,
                    api_token,
                } => {
                    self.fastly(purge_url, api_token, batch).await?;
                    requests += 1;
                }
                Edge::Cloudflare {
                    purge_url,
                    api_token,
                } => {
                    self.cloudflare(purge_url, api_token, batch).await?;
                    requests += 1;
                }
            }
        }
        Ok(requests)
    }

    /// `tags` cut into the batches one request may carry.
    fn batches<'a>(&self, tags: &'a [String]) -> Vec<&'a [String]> {
        match self.edge {
            Edge::Fastly { .. } => tags.chunks(FASTLY_KEYS_PER_REQUEST).collect(),
            Edge::Cloudflare { .. } => tags.chunks(CLOUDFLARE_TAGS_PER_REQUEST).collect(),
            Edge::Varnish { .. } => {
                let mut batches = Vec::new();
                let (mut start, mut bytes) = (0, 0);
                for (index, tag) in tags.iter().enumerate() {
                    if index > start && bytes + 1 + tag.len() > VARNISH_HEADER_BYTES {
                        batches.push(&tags[start..index]);
                        (start, bytes) = (index, 0);
                    }
                    bytes += tag.len() + 1;
                }
                if start < tags.len() {
                    batches.push(&tags[start..]);
                }
                batches
            }
        }
    }

    async fn varnish(&self, url: &str, tags: &str) -> Result<(), PurgeError> {
        let method = Method::from_bytes(b"PURGE").unwrap_or(Method::POST);
        let mut request = self
            .client
            .request(method, format!("{url}/"))
            .header("xkey-purge", tags);
        if self.soft {
            request = request.header("xkey-soft", "1");
        }
        acknowledged(request.send().await?, |_| true).await
    }

    async fn fastly(&self, url: &str, token: &str, keys: &[String]) -> Result<(), PurgeError> {
        let mut request = self
            .client
            .post(url)
            .header("Fastly-Key", token)
            .header("Accept", "application/json")
            .json(&serde_json::json!({ "surrogate_keys": keys }));
        if self.soft {
            request = request.header("Fastly-Soft-Purge", "1");
        }
        acknowledged(request.send().await?, |_| true).await
    }

    async fn cloudflare(&self, url: &str, token: &str, tags: &[String]) -> Result<(), PurgeError> {
        let request = self
            .client
            .post(url)
            .bearer_auth(token)
            .json(&serde_json::json!({ "tags": tags }));
        // Cloudflare answers 200 with `"success": false` for some refusals.
        acknowledged(request.send().await?, |body| {
            serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|value| value.get("success").and_then(serde_json::Value::as_bool))
                == Some(true)
        })
        .await
    }
}

/// `Ok` for a 2xx answer whose body `accepts`; the edge's refusal otherwise.
async fn acknowledged(
    response: reqwest::Response,
    accepts: impl FnOnce(&str) -> bool,
) -> Result<(), PurgeError> {
    let status = response.status();
    let body = response.text().await?;
    if status.is_success() && accepts(&body) {
        return Ok(());
    }
    Err(PurgeError::Refused {
        status,
        body: body.chars().take(200).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varnish() -> PurgeBackend {
        let mut config = Config::for_database("sqlite::memory:");
        config.edge_purge = EdgePurgeBackend::Varnish;
        config.edge_varnish_urls = vec!["http://127.0.0.1:1/".to_owned()];
        PurgeBackend::from_config(&config).expect("configured")
    }

    #[test]
    fn varnish_batches_stay_within_its_header_limit_and_keep_every_tag() {
        let tags: Vec<String> = (0..2_000).map(|id| format!("Product-{id}")).collect();
        let batches = varnish().batches(&tags);
        assert!(batches.len() > 1);
        for batch in &batches {
            assert!(batch.join(" ").len() <= VARNISH_HEADER_BYTES);
        }
        let rejoined: Vec<&String> = batches.iter().flat_map(|batch| batch.iter()).collect();
        assert_eq!(rejoined.len(), tags.len());
    }
}
