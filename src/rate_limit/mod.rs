//! Rate limits: each client address, and each bearer token, may spend a budget of query cost
//! per window; past it the client is refused (429) until its window ends.
//!
//! The cost is known only once a request is answered (a hit never parses its document), so a
//! request is charged after it is answered and refused before it runs: a cache hit costs 1, an
//! executed operation the fields it selects with fragments expanded (`DocumentCost`), a refused
//! one 1. The charge is one Redis round trip (a script over keys under one hash tag: one slot on
//! a cluster) whose answer also tells this instance to refuse the client until its window ends,
//! so a refusal costs no round trip. An instance that has not charged the client since its
//! budget ran out serves it once more: the budget is overdrawn by at most one request per
//! instance (and per concurrent request). Without Redis, or while it fails or is slow, the
//! same counters run in-process (bounded: `CATALOG_RATE_LIMIT_MAX_CLIENTS`, least recently
//! seen forgotten first); an unavailable Redis never fails a request.

pub mod address;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cache::storage::redis::RedisStorage;
use crate::config::Config;

pub use address::ClientAddresses;

/// How long the limiter counts in-process after Redis failed before it tries Redis again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a request refused before it ran (a bad token, a mutation over GET) is charged.
pub const REFUSED_COST: u64 = 1;

/// The two budgets, named as in the `RateLimit-Policy` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Address,
    Token,
}

impl Budget {
    pub fn name(self) -> &'static str {
        match self {
            Budget::Address => "address",
            Budget::Token => "token",
        }
    }
}

/// Who is charged for a request: its address, and its token when it sent one (valid or not:
/// an invalid token is charged too, and the address budget keeps token rotation in check).
#[derive(Debug, Clone)]
pub struct Client {
    pub address: IpAddr,
    pub token_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CounterKey {
    Address(IpAddr),
    Token(String),
}

/// One budget's state after a charge or a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub budget: Budget,
    pub quota: u64,
    pub remaining: u64,
    /// Until the window ends and the budget is whole again.
    pub reset: Duration,
}

/// What the limiter says about a request: each budget's standing, and whether it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub window: Duration,
    pub standings: Vec<Standing>,
    pub limited: bool,
}

impl Verdict {
    /// Whole seconds until every exhausted budget is whole again (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.standings
            .iter()
            .filter(|standing| standing.remaining == 0)
            .map(|standing| standing.reset.as_millis().div_ceil(1000) as u64)
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers, structured fields): each
    /// budget's quota `q` per window `w` seconds.
    pub fn policy_header(&self) -> String {
        let window = self.window.as_secs();
        self.standings
            .iter()
            .map(|standing| {
                format!(
                    "\"{}\";q={};w={window}",
                    standing.budget.name(),
                    standing.quota
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `RateLimit`: each budget's remaining cost `r` and seconds `t` until it is whole.
    pub fn limit_header(&self) -> String {
        self.standings
            .iter()
            .map(|standing| {
                format!(
                    "\"{}\";r={};t={}",
                    standing.budget.name(),
                    standing.remaining,
                    standing.reset.as_millis().div_ceil(1000)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One client's budget in this process: the window opened with the entry (the map forgets it
/// when the window ends), the cost used (in-process counting) and, from either counting, until
/// when the client is refused.
struct Window {
    opened: Instant,
    used: AtomicU64,
    /// Milliseconds since the limiter started; 0 when not refused.
    refused_until_ms: AtomicU64,
}

#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    window: Duration,
    address_quota: u64,
    token_quota: u64,
    addresses: ClientAddresses,
    windows: moka::sync::Cache<CounterKey, Arc<Window>>,
    redis: Option<Arc<RedisStorage>>,
    script: redis::Script,
    /// `{<cache prefix>rate}`: every counter's key starts with this hash tag.
    key_prefix: String,
    command_timeout: Duration,
    started: Instant,
    /// When to try Redis again after it failed (milliseconds since `started`; 0: use it).
    redis_retry_at_ms: AtomicU64,
    /// Whether the last Redis charge failed, so the outage and the recovery log once each.
    counting_locally: AtomicBool,
    /// Requests counted in-process during the current Redis outage.
    charged_locally: AtomicU64,
}

impl RateLimiter {
    /// `None` when rate limits are off: then the request path does no limiter work at all.
    /// `redis` is the cache's Redis, shared by every instance.
    pub fn from_config(config: &Config, redis: Option<Arc<RedisStorage>>) -> Option<Self> {
        if !config.rate_limit_enabled {
            return None;
        }
        let window = config.rate_limit_window();
        Some(RateLimiter {
            inner: Arc::new(Inner {
                window,
                address_quota: config.rate_limit_cost_per_address,
                token_quota: config.rate_limit_cost_per_token,
                addresses: ClientAddresses::from_config(config),
                windows: moka::sync::Cache::builder()
                    .max_capacity(config.rate_limit_max_clients)
                    .time_to_live(window)
                    // A new client is always admitted: TinyLFU could keep one that floods with
                    // fresh addresses from ever being counted.
                    .eviction_policy(moka::policy::EvictionPolicy::lru())
                    .build(),
                redis,
                script: redis::Script::new(include_str!("charge.lua")),
                key_prefix: format!("{{{}rate}}:", config.cache_prefix),
                command_timeout: config.redis_command_timeout(),
                started: Instant::now(),
                redis_retry_at_ms: AtomicU64::new(0),
                counting_locally: AtomicBool::new(false),
                charged_locally: AtomicU64::new(0),
            }),
        })
    }

    pub fn addresses(&self) -> &ClientAddresses {
        &self.inner.addresses
    }

    /// Clients this process tracks now (for `/metrics`; bounded by the capacity).
    pub fn tracked_clients(&self) -> u64 {
        self.inner.windows.run_pending_tasks();
        self.inner.windows.entry_count()
    }

    /// The refusal for a client whose budget ran out, if it did; no round trip.
    pub fn check(&self, client: &Client) -> Option<Verdict> {
        let now = self.now_ms();
        let mut standings = Vec::with_capacity(2);
        let mut limited = false;
        for (key, budget, quota) in self.counters(client) {
            let refused_until = self
                .inner
                .windows
                .get(&key)
                .map_or(0, |window| window.refused_until_ms.load(Ordering::Relaxed));
            let (remaining, reset) = if refused_until > now {
                limited = true;
                (0, Duration::from_millis(refused_until - now))
            } else {
                (quota, self.inner.window)
            };
            standings.push(Standing {
                budget,
                quota,
                remaining,
                reset,
            });
        }
        limited.then(|| Verdict {
            window: self.inner.window,
            standings,
            limited,
        })
    }

    /// Charges an answered request's cost: in Redis when it answers in time, else here.
    pub async fn charge(&self, client: &Client, cost: u64) -> Verdict {
        let cost = cost.max(1);
        let counters = self.counters(client);
        if let Some(used) = self.charge_shared(&counters, cost).await {
            let now = self.now_ms();
            let standings = counters
                .into_iter()
                .zip(used)
                .map(|((key, budget, quota), (used, left))| {
                    let reset = Duration::from_millis(left);
                    self.standing(|| self.window(&key), budget, quota, used, reset, now)
                })
                .collect();
            return self.verdict(standings);
        }
        let now = self.now_ms();
        let standings = counters
            .into_iter()
            .map(|(key, budget, quota)| {
                let window = self.window(&key);
                let used = window.used.fetch_add(cost, Ordering::Relaxed) + cost;
                let reset = self.inner.window.saturating_sub(window.opened.elapsed());
                self.standing(|| window, budget, quota, used, reset, now)
            })
            .collect();
        self.verdict(standings)
    }

    fn verdict(&self, standings: Vec<Standing>) -> Verdict {
        Verdict {
            window: self.inner.window,
            // The request that spends the rest is still answered; the next ones are refused.
            limited: false,
            standings,
        }
    }

    fn counters(&self, client: &Client) -> Vec<(CounterKey, Budget, u64)> {
        let mut counters = Vec::with_capacity(2);
        counters.push((
            CounterKey::Address(client.address),
            Budget::Address,
            self.inner.address_quota,
        ));
        if let Some(token_hash) = &client.token_hash {
            counters.push((
                CounterKey::Token(token_hash.clone()),
                Budget::Token,
                self.inner.token_quota,
            ));
        }
        counters
    }

    fn window(&self, key: &CounterKey) -> Arc<Window> {
        self.inner.windows.get_with_by_ref(key, || {
            Arc::new(Window {
                opened: Instant::now(),
                used: AtomicU64::new(0),
                refused_until_ms: AtomicU64::new(0),
            })
        })
    }

    /// A counter's standing after a charge of `used` in a window ending in `reset`; a
    /// counter spent is remembered here (in `window`, looked up only then) as refused until
    /// then, whoever counted it.
    fn standing(
        &self,
        window: impl FnOnce() -> Arc<Window>,
        budget: Budget,
        quota: u64,
        used: u64,
        reset: Duration,
        now: u64,
    ) -> Standing {
        if used >= quota {
            let until = now + reset.as_millis() as u64;
            window().refused_until_ms.store(until, Ordering::Relaxed);
        }
        Standing {
            budget,
            quota,
            remaining: quota.saturating_sub(used),
            reset,
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    /// Each counter's (used, milliseconds left) from Redis, or `None` to count here: no Redis,
    /// Redis failed less than `REDIS_RETRY_AFTER` ago, or it failed (or timed out) now.
    async fn charge_shared(
        &self,
        counters: &[(CounterKey, Budget, u64)],
        cost: u64,
    ) -> Option<Vec<(u64, u64)>> {
        let inner = &self.inner;
        let redis = inner.redis.as_ref()?;
        if inner.redis_retry_at_ms.load(Ordering::Relaxed) > self.now_ms() {
            inner.charged_locally.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut invocation = inner.script.prepare_invoke();
        for (key, _, _) in counters {
            invocation.key(match key {
                CounterKey::Address(address) => format!("{}a:{address}", inner.key_prefix),
                CounterKey::Token(hash) => format!("{}t:{hash}", inner.key_prefix),
            });
        }
        invocation.arg(cost).arg(inner.window.as_millis() as u64);
        let answer =
            tokio::time::timeout(inner.command_timeout, redis.invoke::<Vec<i64>>(&invocation))
                .await;
        let failure = match answer {
            Ok(Ok(values)) if values.len() == 2 * counters.len() => {
                if inner.counting_locally.swap(false, Ordering::Relaxed) {
                    let counted = inner.charged_locally.swap(0, Ordering::Relaxed);
                    tracing::info!(
                        counted_locally = counted,
                        "rate limits: Redis is back, counting there again ({counted} requests were counted in-process meanwhile)"
                    );
                }
                let pairs = values
                    .chunks(2)
                    .map(|pair| (pair[0].max(0) as u64, pair[1].max(0) as u64))
                    .collect();
                return Some(pairs);
            }
            Ok(Ok(values)) => format!("an answer of {} values", values.len()),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", inner.command_timeout),
        };
        inner.redis_retry_at_ms.store(
            self.now_ms() + REDIS_RETRY_AFTER.as_millis() as u64,
            Ordering::Relaxed,
        );
        inner.charged_locally.fetch_add(1, Ordering::Relaxed);
        if !inner.counting_locally.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %failure,
                "rate limits: Redis unavailable, counting in-process until it answers again"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(adjust: impl FnOnce(&mut Config)) -> RateLimiter {
        let mut config = Config::for_database("sqlite::memory:");
        adjust(&mut config);
        RateLimiter::from_config(&config, None).expect("enabled")
    }

    fn client(address: &str, token: Option<&str>) -> Client {
        Client {
            address: address.parse().expect("an address"),
            token_hash: token.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn a_client_is_refused_once_its_budget_is_spent_and_others_are_not() {
        let limiter = limiter(|config| config.rate_limit_cost_per_address = 10);
        let spender = client("10.0.0.1", None);
        assert!(limiter.check(&spender).is_none());
        let verdict = limiter.charge(&spender, 6).await;
        assert_eq!(verdict.standings[0].remaining, 4);
        assert!(limiter.check(&spender).is_none(), "4 left");
        let verdict = limiter.charge(&spender, 6).await;
        assert_eq!(verdict.standings[0].remaining, 0);
        let refusal = limiter.check(&spender).expect("refused");
        assert!(refusal.limited);
        assert!((1..=60).contains(&refusal.retry_after_secs()));
        assert_eq!(refusal.policy_header(), "\"address\";q=10;w=60");
        assert!(refusal.limit_header().starts_with("\"address\";r=0;t="));
        assert!(limiter.check(&client("10.0.0.2", None)).is_none());
    }

    #[tokio::test]
    async fn a_token_s_budget_binds_across_addresses() {
        let limiter = limiter(|config| config.rate_limit_cost_per_token = 5);
        limiter.charge(&client("10.0.0.1", Some("t")), 3).await;
        limiter.charge(&client("10.0.0.2", Some("t")), 3).await;
        let refusal = limiter
            .check(&client("10.0.0.3", Some("t")))
            .expect("the token's budget is spent");
        assert_eq!(
            refusal.policy_header(),
            "\"address\";q=100000;w=60, \"token\";q=5;w=60"
        );
        assert!(limiter.check(&client("10.0.0.3", Some("u"))).is_none());
    }
}
