//! Our store URLs, and what fred reads.
//!
//! Switchyard lists cluster seed nodes and Sentinels the way operators write them,
//! `redis-cluster://[user:pass@]h1:p1,h2:p2,…` and
//! `redis-sentinel://[user:pass@]s1:p1,s2:p2,…/db?sentinelServiceName=name`; fred wants one host
//! plus `?node=` parameters (`redis-cluster://[user:pass@]h1:p1?node=h2:p2&node=…`). Standalone
//! URLs (`redis://host:port/db`, `rediss://…`) and a URL with a single node pass unchanged.

/// A Sentinel's port where the URL gives none (fred's default for the first one too).
const SENTINEL_PORT: u16 = 26379;

/// What fred's `Config::from_url` accepts for `url`.
pub(super) fn to_fred(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let sentinel = scheme.ends_with("-sentinel");
    if !sentinel && !scheme.ends_with("-cluster") {
        return url.to_owned();
    }
    // The authority ends at the first '/', '?' or '#'; a password holding one must be
    // percent-encoded anyway.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let mut hosts = hosts.split(',').map(str::trim).filter(|h| !h.is_empty());
    let Some(first) = hosts.next() else {
        return url.to_owned();
    };
    // fred wants a port on every `node`; a Sentinel's is well known.
    let others: Vec<String> = hosts
        .map(|h| match (sentinel, has_port(h)) {
            (true, false) => format!("node={h}:{SENTINEL_PORT}"),
            _ => format!("node={h}"),
        })
        .collect();
    if others.is_empty() {
        return url.to_owned();
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    // A path means nothing to a cluster (no databases); behind Sentinels it is the database.
    let path = if sentinel { path } else { "" };
    let mut query_parts = others;
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        query_parts.push(query.to_owned());
    }
    format!(
        "{scheme}://{userinfo}{first}{path}?{}",
        query_parts.join("&")
    )
}

/// Whether a node (`host:port`, `[v6]:port`, `host`, `[v6]`) names its port.
fn has_port(node: &str) -> bool {
    match node.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .is_some_and(|(_, rest)| rest.starts_with(':')),
        None => node.contains(':'),
    }
}

/// Why `url` names no server to connect to, if it does not: a node (the server, or one of a
/// cluster's seeds) without a host, or what fred's parser refuses (`connect` parses it the same
/// way). Checked with the configuration, so that such a URL stops the start naming `store`,
/// instead of failing to connect. The message quotes no credential.
pub(crate) fn check(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hosts = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    let nodes: Vec<&str> = hosts
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() {
        return Err("no host".to_owned());
    }
    for node in nodes {
        // `[::1]:6379`, `host:6379` or `host`.
        let host = match node.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map_or("", |(host, _)| host),
            None => node.rsplit_once(':').map_or(node, |(host, _)| host),
        };
        if host.is_empty() {
            return Err(format!("no host in {node:?}"));
        }
    }
    fred::prelude::Config::from_url(&to_fred(url))
        .map(|_| ())
        .map_err(|e| scrub(e.details(), url))
}

/// `url` without its credentials (the server's, and the Sentinels' in the query), for messages
/// and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable url>".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let tail = match sentinel_password(tail) {
        Some(password) => tail.replacen(password, "***", 1),
        None => tail.to_owned(),
    };
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***@{}{tail}", &authority[at + 1..]),
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// The value of the query's `sentinelPassword` (the Sentinels' own credential), if any.
fn sentinel_password(url: &str) -> Option<&str> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("sentinelPassword="))
        .filter(|password| !password.is_empty())
}

/// Removes the URL's password (and user) from an error message that might quote it.
pub(super) fn scrub(message: &str, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return message.to_owned();
    };
    let mut out = message.to_owned();
    if let Some(password) = sentinel_password(rest) {
        out = out.replace(password, "***");
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some(at) = authority.rfind('@') else {
        return out;
    };
    let userinfo = &authority[..at];
    if !userinfo.is_empty() {
        out = out.replace(userinfo, "***");
    }
    match userinfo.split_once(':') {
        Some((_, password)) if !password.is_empty() => out = out.replace(password, "***"),
        _ => {}
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn cluster_seed_lists_become_node_parameters() {
        assert_eq!(
            to_fred("redis-cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"),
            "redis-cluster://127.0.0.1:7101?node=127.0.0.1:7102&node=127.0.0.1:7103"
        );
        assert_eq!(
            to_fred("rediss-cluster://u:p%40ss@a:1,b:2/?foo=bar"),
            "rediss-cluster://u:p%40ss@a:1?node=b:2&foo=bar"
        );
        assert_eq!(
            to_fred("redis-cluster://a:1"),
            "redis-cluster://a:1",
            "one seed is already fred's form"
        );
        assert_eq!(
            to_fred("redis://u:p@h:6379/2"),
            "redis://u:p@h:6379/2",
            "standalone URLs pass unchanged"
        );
    }

    #[test]
    fn sentinel_lists_keep_their_database_and_get_the_sentinel_port() {
        assert_eq!(
            to_fred("redis-sentinel://u:p@s1:26380,s2,[::1]/2?sentinelServiceName=sy"),
            "redis-sentinel://u:p@s1:26380/2?node=s2:26379&node=[::1]:26379&sentinelServiceName=sy"
        );
        assert_eq!(
            to_fred("rediss-sentinel://s1:1,[::2]:3?sentinelServiceName=sy"),
            "rediss-sentinel://s1:1?node=[::2]:3&sentinelServiceName=sy"
        );
        assert_eq!(
            to_fred("redis-sentinel://s1/0?sentinelServiceName=sy"),
            "redis-sentinel://s1/0?sentinelServiceName=sy"
        );
        // What fred reads from it: every Sentinel, the service, the database.
        let config = fred::prelude::Config::from_url(&to_fred(
            "redis-sentinel://s1:26380,s2/3?sentinelServiceName=sy",
        ))
        .unwrap();
        assert_eq!(config.database, Some(3));
        match config.server {
            fred::types::config::ServerConfig::Sentinel {
                hosts,
                service_name,
                ..
            } => {
                assert_eq!(service_name, "sy");
                let mut hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
                hosts.sort();
                assert_eq!(hosts, ["s1:26380", "s2:26379"]);
            }
            other => panic!("not a Sentinel configuration: {other:?}"),
        }
        assert!(
            check("redis-sentinel://s1,s2/0").is_err(),
            "no service name"
        );
        assert!(check("redis-sentinel://s1,,s2/0?sentinelServiceName=sy").is_ok());
        assert!(check("redis-sentinel://s1,:1/0?sentinelServiceName=sy").is_err());
    }

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(
            scrub("failed: u:secret@h", "redis://u:secret@h:1"),
            "failed: ***@h"
        );
        assert_eq!(
            scrub("bad password secret", "redis://u:secret@h:1"),
            "bad password ***"
        );
        let sentinel =
            "redis-sentinel://u:secret@s1/0?sentinelServiceName=sy&sentinelPassword=s3nt";
        assert_eq!(
            redact(sentinel),
            "redis-sentinel://***@s1/0?sentinelServiceName=sy&sentinelPassword=***"
        );
        assert_eq!(
            redact("redis-sentinel://s1/0?sentinelPassword=s3nt&sentinelServiceName=sy"),
            "redis-sentinel://s1/0?sentinelPassword=***&sentinelServiceName=sy"
        );
        assert_eq!(
            scrub("auth s3nt failed for u", sentinel),
            "auth *** failed for u"
        );
    }
}
