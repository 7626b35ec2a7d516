//! Our store URLs, and what fred reads.
//!
//! Switchyard lists cluster seed nodes the way operators write them,
//! `redis-cluster://[user:pass@]h1:p1,h2:p2,…`; fred wants one host plus `?node=` parameters
//! (`redis-cluster://[user:pass@]h1:p1?node=h2:p2&node=…`). Standalone URLs
//! (`redis://host:port/db`, `rediss://…`) and a cluster URL with a single node pass unchanged.

/// What fred's `Config::from_url` accepts for `url`.
pub(super) fn to_fred(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if !scheme.ends_with("-cluster") {
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
    let others: Vec<String> = hosts.map(|h| format!("node={h}")).collect();
    if others.is_empty() {
        return url.to_owned();
    }
    // A path means nothing to a cluster (no databases); the query is kept.
    let query = tail.split_once('?').map(|(_, query)| query);
    let mut query_parts = others;
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        query_parts.push(query.to_owned());
    }
    format!("{scheme}://{userinfo}{first}?{}", query_parts.join("&"))
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

/// `url` without its credentials, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable url>".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***@{}{tail}", &authority[at + 1..]),
        None => url.to_owned(),
    }
}

/// Removes the URL's password (and user) from an error message that might quote it.
pub(super) fn scrub(message: &str, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return message.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some(at) = authority.rfind('@') else {
        return message.to_owned();
    };
    let userinfo = &authority[..at];
    let mut out = message.to_owned();
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
    }
}
