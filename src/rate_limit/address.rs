//! Which address a request is charged to, and whether it is exempt. The peer address, unless
//! the peer is a trusted proxy (`CATALOG_RATE_LIMIT_TRUSTED_PROXIES`): then `X-Forwarded-For`
//! is read from its right end, past every trusted proxy, to the first address no trusted proxy
//! owns. Entries further left were written by the client itself and are never believed.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::{Config, cidr_blocks};

pub struct ClientAddresses {
    exempt: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
}

impl ClientAddresses {
    /// From settings `Config::validate` has checked (an item that is not a block is skipped).
    pub fn from_config(config: &Config) -> Self {
        ClientAddresses {
            exempt: cidr_blocks(&config.rate_limit_exempt).unwrap_or_default(),
            trusted_proxies: cidr_blocks(&config.rate_limit_trusted_proxies).unwrap_or_default(),
        }
    }

    pub fn is_exempt(&self, address: IpAddr) -> bool {
        contains(&self.exempt, address)
    }

    /// The client's address, from the peer's and (behind trusted proxies) the forwarded ones.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !contains(&self.trusted_proxies, peer) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for entry in forwarded.into_iter().rev() {
            if !contains(&self.trusted_proxies, client) {
                break;
            }
            match entry.parse::<IpAddr>() {
                Ok(address) => client = canonical(address),
                // A proxy wrote something that is not an address: the last one that did is it.
                Err(_) => break,
            }
        }
        client
    }
}

/// An IPv4 address a dual-stack socket reports as `::ffff:a.b.c.d` is that IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn contains(blocks: &[IpNet], address: IpAddr) -> bool {
    blocks.iter().any(|block| block.contains(&address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(exempt: &str, proxies: &str) -> ClientAddresses {
        let mut config = Config::for_database("sqlite::memory:");
        config.rate_limit_exempt = exempt.split(',').map(str::to_owned).collect();
        config.rate_limit_trusted_proxies = proxies.split(',').map(str::to_owned).collect();
        ClientAddresses::from_config(&config)
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("a header value"));
        headers
    }

    #[test]
    fn a_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let addresses = addresses("", "10.0.0.0/8");
        let ip = |text: &str| text.parse::<IpAddr>().expect("an address");
        let spoofed = forwarded("1.1.1.1, 2.2.2.2");
        assert_eq!(addresses.client(ip("8.8.8.8"), &spoofed), ip("8.8.8.8"));
        assert_eq!(addresses.client(ip("10.0.0.1"), &spoofed), ip("2.2.2.2"));
        let chain = forwarded("1.1.1.1, 3.3.3.3, 10.0.0.7");
        assert_eq!(addresses.client(ip("10.0.0.1"), &chain), ip("3.3.3.3"));
        let garbage = forwarded("1.1.1.1, not-an-address");
        assert_eq!(addresses.client(ip("10.0.0.1"), &garbage), ip("10.0.0.1"));
        assert_eq!(
            addresses.client(ip("::ffff:8.8.4.4"), &HeaderMap::new()),
            ip("8.8.4.4")
        );
    }

    #[test]
    fn exempt_blocks_match_their_addresses_only() {
        let addresses = addresses("127.0.0.0/8,::1/128,192.0.2.7", "");
        for (address, exempt) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("10.0.0.1", false),
        ] {
            let ip = address.parse().expect("an address");
            assert_eq!(addresses.is_exempt(ip), exempt, "{address}");
        }
    }
}
