vcl 4.1;
# Varnish 7 in front of catalog-api, purged by tag when a mutation commits.
#
# Needs varnish-modules (xkey, var): Debian's `varnish-modules`, or the varnish image's.
# Run the API with:
#   CATALOG_EDGE_PURGE=varnish CATALOG_EDGE_VARNISH_URLS=http://<this varnish>:<port>
#
# - GET (and HEAD) requests without credentials are cached by URL: persisted queries sent as
#   GET (Apollo Client's `useGETForHashedQueries`, urql's `preferGetForPersistedQueries`)
#   and plain GET queries. POST is passed: hashing a body would need it buffered for every
#   request, and GraphQL clients that want edge caching send hashed queries over GET.
# - The API's `Vary: Authorization, Accept` is honoured; requests with credentials are passed
#   and token-scoped answers (`private, no-store`) are never stored.
# - The TTL is the API's `s-maxage` (a result's TTL while a purger is configured). Purges
#   (`PURGE` with `xkey-purge: <tags>`) are taken only from the `purgers` addresses.
# - Read-your-writes: a fetch that a purge overtook may carry a result computed before the
#   mutation, so it is delivered but not stored; and Varnish serves an expired object only
#   inside the `stale-while-revalidate` the API gave it (never a purged one: the API gives no
#   such window when it soft-purges).

import std;
import var;
import xkey;

backend default {
    .host = "app";
    .port = "8000";
    .connect_timeout = 2s;
    .first_byte_timeout = 15s;
}

# Who may purge: the API instances. Narrow this to your network.
acl purgers {
    "localhost";
    "127.0.0.1";
    "::1";
    "10.0.0.0"/8;
    "172.16.0.0"/12;
    "192.168.0.0"/16;
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "purging is not allowed from this address"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "a purge names its tags in the xkey-purge header"));
        }
        # Recorded before the purge: a fetch that began earlier is not stored.
        var.global_set("catalog-last-purge", "" + std.real(time = now));
        if (req.http.xkey-soft) {
            set req.http.x-purged = xkey.softpurge(req.http.xkey-purge);
        } else {
            set req.http.x-purged = xkey.purge(req.http.xkey-purge);
        }
        return (synth(200, "purged " + req.http.x-purged + " objects"));
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    if (req.http.Authorization || req.http.X-Bypass-Cache) {
        return (pass);
    }
    # The API sets no cookies; a browser's cookies for the site must not split the cache.
    unset req.http.Cookie;
    return (hash);
}

sub vcl_backend_fetch {
    set bereq.http.x-catalog-fetch-start = "" + std.real(time = now);
}

sub vcl_backend_response {
    # A purge after this fetch began may have missed it (it was not stored yet): deliver it,
    # store nothing. Times are Varnish's own, to the millisecond, so err on the safe side.
    if (std.real(var.global_get("catalog-last-purge"), 0.0) + 0.002 >=
        std.real(bereq.http.x-catalog-fetch-start, 0.0)) {
        set beresp.uncacheable = true;
        set beresp.ttl = 0s;
        return (deliver);
    }
    if (beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }
    # Serve stale only where the API said so (Varnish reads stale-while-revalidate into
    # beresp.grace); its default grace would serve expired and soft-purged objects.
    if (beresp.http.Cache-Control !~ "stale-while-revalidate") {
        set beresp.grace = 0s;
    }
    # Expired or soft-purged objects are kept to revalidate with If-None-Match (a 304 from the
    # API costs a cache lookup, not an execution), never to be served as they are.
    set beresp.keep = 1h;
    # Varnish's built-in rules follow: `private`, `no-store` (token-scoped answers, errors)
    # and `no-cache` are never stored.
}

sub vcl_deliver {
    unset resp.http.xkey;
    if (obj.hits > 0) {
        set resp.http.X-Edge-Cache = "HIT";
    } else {
        set resp.http.X-Edge-Cache = "MISS";
    }
}
