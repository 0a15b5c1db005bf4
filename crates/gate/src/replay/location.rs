//! Where the replay store lives: `GATE_REPLAY_STORE` (docs/operations.md, "Shared replay
//! store"), parsed strictly into a [`StoreLocation`]. A Redis URL may carry a password: it is
//! held in a [`Password`] that prints as `***`, and the URL prints with it replaced, so neither
//! `Debug` nor `Display` of anything here can put it in a log line, an error or a metric. Parse
//! errors describe the problem without quoting the value.

use std::fmt;

use zeroize::Zeroizing;

/// `GATE_REPLAY_STORE`: this process's own table, or a Redis every replica shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `memory`: the in-process nonce cache (the default).
    Memory,
    /// `redis://...` or `redis-cluster://...`.
    Redis(RedisUrl),
}

impl StoreLocation {
    /// Parse the variable's value. The error says what is wrong without quoting the value,
    /// which may hold a password.
    pub fn parse(text: &str) -> Result<StoreLocation, String> {
        if text.eq_ignore_ascii_case("memory") {
            return Ok(StoreLocation::Memory);
        }
        RedisUrl::parse(text).map(StoreLocation::Redis)
    }

    /// The `replay_store` label of `sig_gate_config_info`: `memory`, `redis` or
    /// `redis-cluster`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreLocation::Memory => "memory",
            StoreLocation::Redis(url) if url.cluster => "redis-cluster",
            StoreLocation::Redis(_) => "redis",
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Memory => f.write_str("memory"),
            StoreLocation::Redis(url) => url.fmt(f),
        }
    }
}

/// A Redis server or cluster to record nonces in. Prints with its password as `***`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `redis-cluster://`: the nodes are seeds of a Redis Cluster.
    pub cluster: bool,
    /// The server (`redis://`: exactly one), or the cluster's seed nodes.
    pub nodes: Vec<Node>,
    /// The logical database (`redis://` only; a cluster has database 0 alone).
    pub db: u32,
    /// The ACL user; `None` authenticates as the default user (or not at all).
    pub username: Option<String>,
    /// The password, when the URL has one.
    pub password: Option<Password>,
}

/// One `host:port` of a Redis URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// A DNS name, an IPv4 address or an IPv6 address (without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A store password: overwritten with zeros when dropped, printed as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// The password, for the Redis handshake alone.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

const REDIS: &str = "redis://";
const REDIS_CLUSTER: &str = "redis-cluster://";
const SHAPES: &str = "memory, redis://[user:password@]host:port[/db] or \
                      redis-cluster://[user:password@]host:port[,host:port...]";

impl RedisUrl {
    fn parse(text: &str) -> Result<RedisUrl, String> {
        let (cluster, rest) = if let Some(rest) = text.strip_prefix(REDIS) {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix(REDIS_CLUSTER) {
            (true, rest)
        } else if text.starts_with("rediss://") || text.starts_with("rediss-cluster://") {
            return Err(
                "TLS to Redis (rediss://) is not supported: use redis:// to a \
                        server on a trusted network (docs/operations.md)"
                    .into(),
            );
        } else {
            return Err(format!("not one of {SHAPES}"));
        };
        // Hosts, ports and the database hold no `@`, so the user info ends at the last one
        // (a password's own `@` should be written `%40`, but is taken as it is).
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => credentials(userinfo)?,
        };
        if rest.contains(['?', '#']) {
            return Err("a Redis URL takes no query or fragment".into());
        }
        let (hosts, path) = match rest.split_once('/') {
            Some((hosts, path)) => (hosts, Some(path)),
            None => (rest, None),
        };
        let nodes = hosts.split(',').map(node).collect::<Result<Vec<_>, _>>()?;
        if !cluster && nodes.len() > 1 {
            return Err(
                "redis:// names one server; list a cluster's seed nodes with redis-cluster://"
                    .into(),
            );
        }
        let db = match path {
            None | Some("") => 0,
            Some(_) if cluster => {
                return Err("a Redis Cluster has database 0 only: drop the /db".into());
            }
            Some(db) => db
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| db.parse().ok())
                .flatten()
                .ok_or("the database after the / must be a whole number")?,
        };
        Ok(RedisUrl {
            cluster,
            nodes,
            db,
            username,
            password,
        })
    }
}

/// `user:password` (either part percent-encoded; the user may be empty).
fn credentials(userinfo: &str) -> Result<(Option<String>, Option<Password>), String> {
    let Some((user, password)) = userinfo.split_once(':') else {
        return Err("the user info needs a password: user:password@ or :password@".into());
    };
    let user = percent_decode(user).ok_or("the user name has a bad percent escape")?;
    let password =
        Zeroizing::new(percent_decode(password).ok_or("the password has a bad percent escape")?);
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    Ok((
        Some(user).filter(|user| !user.is_empty()),
        Some(Password(password)),
    ))
}

/// `host:port`, the host a DNS name, an IPv4 address or a bracketed IPv6 address.
fn node(text: &str) -> Result<Node, String> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, port) = bracketed
            .split_once("]:")
            .ok_or_else(|| format!("{text:?} is not [IPv6 address]:port"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{text:?}: not an IPv6 address in the brackets"));
        }
        (host, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} needs a port: host:port"))?;
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if host.is_empty() || !host.chars().all(name_char) {
            return Err(format!("{text:?}: not a host name or IPv4 address"));
        }
        (host, port)
    };
    let port = port
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse::<u16>().ok())
        .flatten()
        .filter(|port| *port > 0)
        .ok_or_else(|| format!("{text:?}: the port must be 1-65535"))?;
    Ok(Node {
        host: host.to_owned(),
        port,
    })
}

/// Decode `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out.to_vec()).ok()
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.cluster { REDIS_CLUSTER } else { REDIS })?;
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (_, None) => {}
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            node.fmt(f)?;
        }
        if !self.cluster {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> RedisUrl {
        match StoreLocation::parse(text) {
            Ok(StoreLocation::Redis(url)) => url,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn memory_and_redis_urls_parse() {
        assert_eq!(StoreLocation::parse("memory"), Ok(StoreLocation::Memory));
        assert_eq!(StoreLocation::Memory.kind(), "memory");
        let single = url("redis://10.0.0.5:6379/2");
        assert_eq!(
            single,
            RedisUrl {
                cluster: false,
                nodes: vec![Node {
                    host: "10.0.0.5".into(),
                    port: 6379
                }],
                db: 2,
                username: None,
                password: None,
            }
        );
        assert_eq!(single.to_string(), "redis://10.0.0.5:6379/2");
        assert_eq!(url("redis://redis.default.svc:6379").db, 0);
        assert_eq!(url("redis://redis:6379/").db, 0);
        let v6 = url("redis://[::1]:6380");
        assert_eq!(v6.nodes[0].host, "::1");
        assert_eq!(v6.to_string(), "redis://[::1]:6380/0");
        let cluster = url("redis-cluster://a:7000,b:7001,[::1]:7002");
        assert!(cluster.cluster);
        assert_eq!(cluster.nodes.len(), 3);
        assert_eq!(
            cluster.to_string(),
            "redis-cluster://a:7000,b:7001,[::1]:7002"
        );
        assert_eq!(StoreLocation::Redis(cluster).kind(), "redis-cluster");
        assert_eq!(StoreLocation::Redis(single).kind(), "redis");
    }

    #[test]
    fn credentials_are_decoded_and_never_printed() {
        let with_user = url("redis://gate:s3cr%40t%2Fpw@redis:6379/1");
        assert_eq!(with_user.username.as_deref(), Some("gate"));
        assert_eq!(
            with_user.password.as_ref().map(Password::expose),
            Some("s3cr@t/pw")
        );
        let shown = format!("{with_user} {with_user:?}");
        assert_eq!(with_user.to_string(), "redis://gate:***@redis:6379/1");
        assert!(!shown.contains("s3cr"), "{shown}");
        let password_only = url("redis://:hunter2hunter2@redis:6379");
        assert_eq!(password_only.username, None);
        assert_eq!(password_only.to_string(), "redis://:***@redis:6379/0");
        let raw_at = url("redis-cluster://:p@ss@a:1,b:2");
        assert_eq!(raw_at.password.as_ref().map(Password::expose), Some("p@ss"));
        assert!(!format!("{raw_at:?}").contains("p@ss"));
    }

    #[test]
    fn malformed_values_are_refused_without_quoting_a_password() {
        for bad in [
            "",
            "Memory2",
            "http://redis:6379",
            "rediss://:pw-secret@redis:6379",
            "redis://redis",
            "redis://redis:0",
            "redis://redis:65536",
            "redis://redis:6379/x",
            "redis://redis:6379/1/2",
            "redis://redis:6379?db=1",
            "redis://a:1,b:2",
            "redis-cluster://a:1/1",
            "redis://user@redis:6379",
            "redis://user:@redis:6379",
            "redis://:pw-secret%zz@redis:6379",
            "redis://:pw-secret@:6379",
            "redis://:pw-secret@re dis:6379",
            "redis://[::1:6379",
            "redis://[not-v6]:6379",
            "redis-cluster://a:1,,b:2",
        ] {
            let err = StoreLocation::parse(bad).expect_err(bad);
            assert!(!err.contains("pw-secret"), "{bad}: {err}");
            assert!(!err.is_empty());
        }
    }
}
