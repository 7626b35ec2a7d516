//! Our store URLs, and what fred reads.
//!
//! Switchyard lists cluster seed nodes and Sentinels the way operators write them,
//! `redis-cluster://[user:pass@]h1:p1,h2:p2,…` and
//! `redis-sentinel://[user:pass@]s1:p1,s2:p2,…/db?sentinelServiceName=name`. fred's own URL
//! parser takes one host (and more as `?node=` parameters, which it splits at `:`, so never an
//! IPv6 address): `config` has it read the URL with the first node only, and adds the others.

use fred::error::{Error, ErrorKind};
use fred::prelude::{Config, Server, ServerConfig};

/// A Sentinel's port where the URL gives none (fred's default for the first one too).
const SENTINEL_PORT: u16 = 26379;
/// A cluster node's.
const REDIS_PORT: u16 = 6379;

/// A store URL cut where its parts end: `scheme://userinfo@host,host…tail`.
struct Parts<'a> {
    /// `None` without `://` (then the rest is the whole URL).
    scheme: Option<&'a str>,
    /// Before the authority's last `@`, if it has one.
    userinfo: Option<&'a str>,
    hosts: &'a str,
    /// From the first '/', '?' or '#' after the authority on.
    tail: &'a str,
}

fn parts(url: &str) -> Parts<'_> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // The authority ends at the first '/', '?' or '#'; a password holding one must be
    // percent-encoded anyway.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    Parts {
        scheme,
        userinfo,
        hosts,
        tail,
    }
}

impl<'a> Parts<'a> {
    /// The nodes listed, comma-separated (blank ones left out).
    fn nodes(&self) -> Vec<&'a str> {
        self.hosts
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect()
    }
}

/// fred's configuration for `url`: the scheme, credentials, database, TLS and query as fred
/// reads them, with every node the URL lists.
pub(super) fn config(url: &str) -> Result<Config, Error> {
    let parts = parts(url);
    let Some(scheme) = parts.scheme else {
        return Config::from_url(url);
    };
    let sentinel = scheme.ends_with("-sentinel");
    if !sentinel && !scheme.ends_with("-cluster") {
        return Config::from_url(url);
    }
    let nodes = parts.nodes();
    let Some(first) = nodes.first() else {
        return Config::from_url(url);
    };
    let userinfo = parts.userinfo.map_or(String::new(), |u| format!("{u}@"));
    let tail = parts.tail;
    // A path means nothing to a cluster (no databases); behind Sentinels it is the database.
    let tail = match (sentinel, tail.find('?')) {
        (true, _) => tail,
        (false, Some(query)) => &tail[query..],
        (false, None) => "",
    };
    let mut config = Config::from_url(&format!("{scheme}://{userinfo}{first}{tail}"))?;
    let default_port = if sentinel { SENTINEL_PORT } else { REDIS_PORT };
    let others = nodes[1..]
        .iter()
        .map(|node| server(node, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    match &mut config.server {
        ServerConfig::Clustered { hosts, .. } | ServerConfig::Sentinel { hosts, .. } => {
            hosts.extend(others);
        }
        _ => {}
    }
    Ok(config)
}

/// A node as written (`host:port`, `[v6]:port`, `host`, `[v6]`). An IPv6 address keeps its
/// brackets: fred resolves `host:port` as one string.
fn server(node: &str, default_port: u16) -> Result<Server, Error> {
    let (host, port) = match node.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((address, rest)) => (format!("[{address}]"), rest.strip_prefix(':')),
            None => return Err(Error::new(ErrorKind::Config, format!("bad node {node:?}"))),
        },
        None => match node.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (node.to_owned(), None),
        },
    };
    let port = match port {
        Some(port) => port
            .parse()
            .map_err(|_| Error::new(ErrorKind::Config, format!("bad port in {node:?}")))?,
        None => default_port,
    };
    Ok(Server::new(host, port))
}

/// Why `url` names no server to connect to, if it does not: a node (the server, or one of a
/// cluster's seeds) without a host, or what fred's parser refuses (`connect` parses it the same
/// way). Checked with the configuration, so that such a URL stops the start naming `store`,
/// instead of failing to connect. The message quotes no credential.
pub(crate) fn check(url: &str) -> Result<(), String> {
    let nodes = parts(url).nodes();
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
    let config = config(url).map_err(|e| scrub(e.details(), url))?;
    match config.server {
        ServerConfig::Sentinel { service_name, .. } if service_name.trim().is_empty() => {
            Err("no sentinelServiceName".to_owned())
        }
        _ => Ok(()),
    }
}

/// `url` without its credentials (the server's, and the Sentinels' in the query), for messages
/// and logs.
pub(crate) fn redact(url: &str) -> String {
    let parts = parts(url);
    let Some(scheme) = parts.scheme else {
        return "<unparsable url>".to_owned();
    };
    let tail = masked_query(parts.tail);
    let hosts = parts.hosts;
    match parts.userinfo {
        Some(_) => format!("{scheme}://***@{hosts}{tail}"),
        None => format!("{scheme}://{hosts}{tail}"),
    }
}

/// The query parameter holding the Sentinels' own password.
const SENTINEL_PASSWORD: &str = "sentinelPassword=";

/// `tail` (the URL after its authority) with every `sentinelPassword` value, and whatever
/// follows a `#` (a password's unencoded `#` would cut it there), shown as `***`.
fn masked_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, _)) => (query, "#***"),
        None => (query, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.strip_prefix(SENTINEL_PASSWORD) {
            Some(_) => format!("{SENTINEL_PASSWORD}***"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}{fragment}", pairs.join("&"))
}

/// The values of the query's `sentinelPassword` parameters (the Sentinels' own credential).
fn sentinel_passwords(url: &str) -> Vec<&str> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split(['&', '#'])
        .filter_map(|pair| pair.strip_prefix(SENTINEL_PASSWORD))
        .filter(|password| !password.is_empty())
        .collect()
}

/// Removes the URL's password (and user) from an error message that might quote it.
pub(super) fn scrub(message: &str, url: &str) -> String {
    let parts = parts(url);
    if parts.scheme.is_none() {
        return message.to_owned();
    }
    let mut out = message.to_owned();
    for password in sentinel_passwords(parts.tail) {
        out = out.replace(password, "***");
    }
    let Some(userinfo) = parts.userinfo else {
        return out;
    };
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

    /// The nodes fred will connect to first (cluster seeds, Sentinels, or the server), sorted.
    fn nodes(url: &str) -> Vec<String> {
        let config = config(url).unwrap();
        let mut hosts: Vec<String> = match config.server {
            ServerConfig::Clustered { hosts, .. } | ServerConfig::Sentinel { hosts, .. } => hosts
                .iter()
                .map(|h| format!("{}:{}", h.host, h.port))
                .collect(),
            ServerConfig::Centralized { server } => {
                vec![format!("{}:{}", server.host, server.port)]
            }
        };
        hosts.sort();
        hosts
    }

    #[test]
    fn cluster_seed_lists_are_read_whole() {
        assert_eq!(
            nodes("redis-cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"),
            ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
        );
        let tls = config("rediss-cluster://u:p%40ss@a:1,b:2/?foo=bar").unwrap();
        assert_eq!(tls.password.as_deref(), Some("p@ss"));
        assert!(tls.tls.is_some());
        assert_eq!(
            nodes("rediss-cluster://u:p%40ss@a:1,b:2/?foo=bar"),
            ["a:1", "b:2"]
        );
        assert_eq!(nodes("redis-cluster://a:1"), ["a:1"]);
        // fred's own form, and both at once.
        assert_eq!(nodes("redis-cluster://a:1?node=b:2"), ["a:1", "b:2"]);
        assert_eq!(
            nodes("redis-cluster://a:1,c:3?node=b:2"),
            ["a:1", "b:2", "c:3"]
        );
        assert_eq!(
            nodes("redis-cluster://[::1]:7001,[::1]:7002"),
            ["[::1]:7001", "[::1]:7002"]
        );
        assert_eq!(config("redis://u:p@h:6379/2").unwrap().database, Some(2));
        assert_eq!(nodes("redis://u:p@h:6379/2"), ["h:6379"]);
    }

    #[test]
    fn sentinel_lists_keep_their_database_and_get_the_sentinel_port() {
        let url = "redis-sentinel://u:p@s1:26380,s2,[::1],[::2]:3/2?sentinelServiceName=sy";
        assert_eq!(
            nodes(url),
            ["[::1]:26379", "[::2]:3", "s1:26380", "s2:26379"]
        );
        let read = config(url).unwrap();
        assert_eq!(read.database, Some(2));
        assert_eq!(read.username.as_deref(), Some("u"));
        match read.server {
            ServerConfig::Sentinel { service_name, .. } => assert_eq!(service_name, "sy"),
            other => panic!("not a Sentinel configuration: {other:?}"),
        }
        assert_eq!(
            nodes("redis-sentinel://s1/0?sentinelServiceName=sy"),
            ["s1:26379"]
        );
        assert!(check(url).is_ok());
        assert!(
            check("redis-sentinel://s1,s2/0").is_err(),
            "no service name"
        );
        assert!(check("redis-sentinel://s1,s2/0?sentinelServiceName=").is_err());
        assert!(check("redis-sentinel://s1,,s2/0?sentinelServiceName=sy").is_ok());
        assert!(check("redis-sentinel://s1,:1/0?sentinelServiceName=sy").is_err());
        assert!(check("redis-sentinel://s1,s2:x/0?sentinelServiceName=sy").is_err());
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
        // The value, wherever it also appears; every such parameter; a `#` cuts it.
        assert_eq!(
            redact("redis-sentinel://s1/0?sentinelServiceName=sy&sentinelPassword=sy"),
            "redis-sentinel://s1/0?sentinelServiceName=sy&sentinelPassword=***"
        );
        assert_eq!(
            redact("redis-sentinel://s1/0?sentinelPassword=0&sentinelPassword=b"),
            "redis-sentinel://s1/0?sentinelPassword=***&sentinelPassword=***"
        );
        assert_eq!(
            redact("redis-sentinel://s1/0?sentinelPassword=ab#cd"),
            "redis-sentinel://s1/0?sentinelPassword=***#***"
        );
        assert_eq!(
            scrub("auth s3nt failed for u", sentinel),
            "auth *** failed for u"
        );
    }
}
