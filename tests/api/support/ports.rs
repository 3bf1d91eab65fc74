//! Ports for the servers tests start, kill and start again on the same port (Redis, a Redis
//! Cluster, a PostgreSQL primary and replica). A port from `bind(":0")` is an ephemeral one:
//! while its server is down, the kernel may hand it to any outgoing connection or to another
//! test's `bind(":0")` (a test server, another Redis), and the restart then fails or, worse,
//! reaches someone else's server. So these ports come from below the ephemeral range, each
//! handed out once per test process, and with its cluster bus port (+10000) free too.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports handed out come from `FIRST..FIRST + SPAN`; their bus ports (+10000) from
/// `FIRST + 10000..FIRST + 10000 + SPAN`, still below Linux's ephemeral range (32768 and up).
const FIRST: u16 = 12_000;
const SPAN: u16 = 10_000;
const CLUSTER_BUS_OFFSET: u16 = 10_000;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port no other test of this process was given, free now, outside the ephemeral range,
/// whose cluster bus port is free too.
pub fn restartable_port() -> u16 {
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Start where this process' id points, so two test processes at once rarely meet.
    let start = std::process::id();
    (0..u32::from(SPAN))
        .map(|step| FIRST + ((start + step * 7) % u32::from(SPAN)) as u16)
        .find(|&port| {
            !handed_out.contains(&port) && is_free(port) && is_free(port + CLUSTER_BUS_OFFSET)
        })
        .inspect(|&port| {
            handed_out.insert(port);
        })
        .expect("a free port below the ephemeral range")
}
