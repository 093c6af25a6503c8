//! Locator configuration: owns the TOML file format of `rpcgate locator`
//! (documented key by key in `config/locator.toml`) and its validation into
//! typed values. Every error names the file and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::continuum::Continuum;
use crate::proto::locator::{DEFAULT_PORT, Endpoint};

/// The default listen address: the runtime's pinned locator port on loopback.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    DEFAULT_PORT,
);

/// A configuration that was refused, naming where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {key}: {reason}", file.display())]
pub struct ConfigError {
    /// The file (or `<inline>`).
    pub file: PathBuf,
    /// The offending key, dotted (`groups.canary.echo-v1`), or what failed.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocatorFile {
    listen: Option<String>,
    admin: Option<String>,
    admin_token_file: Option<String>,
    admin_header_timeout_ms: Option<i64>,
    uuid: Option<String>,
    #[serde(default)]
    services: BTreeMap<String, ServiceFile>,
    #[serde(default)]
    groups: BTreeMap<String, BTreeMap<String, i64>>,
    cluster: Option<ClusterFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    #[serde(default)]
    etcd: Vec<String>,
    prefix: Option<String>,
    lease_ttl_ms: Option<i64>,
    etcd_ca_file: Option<PathBuf>,
    etcd_cert_file: Option<PathBuf>,
    etcd_key_file: Option<PathBuf>,
    etcd_user: Option<String>,
    etcd_password_file: Option<PathBuf>,
}

/// The default key prefix in etcd.
pub const DEFAULT_PREFIX: &str = "/rpcgate";

/// The default lease TTL of published instances and locator keys.
pub const DEFAULT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Sharing services and groups with other locators through etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://host:port`), tried in order.
    pub etcd: Vec<String>,
    /// The key prefix every key of this cluster lives under (no trailing `/`).
    pub prefix: String,
    /// The TTL of the lease that holds this locator's keys; etcd rounds it
    /// up to whole seconds.
    pub lease_ttl: std::time::Duration,
    /// TLS and credentials for etcd (none by default).
    pub security: EtcdSecurity,
}

/// How the locator proves itself to etcd and checks etcd's certificate
/// (`cluster.etcd_ca_file` and the keys after it). Paths are relative to
/// the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdSecurity {
    /// The PEM CA bundle that etcd's certificate must chain to; needed by
    /// `https://` endpoints.
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM chain) for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The etcd user to authenticate as.
    pub user: Option<String>,
    /// The file holding that user's password; must not be world-readable.
    pub password_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// A cluster on `etcd` with the default prefix and TTL.
    pub fn new(etcd: Vec<String>) -> Self {
        Self {
            etcd,
            prefix: DEFAULT_PREFIX.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            security: EtcdSecurity::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    endpoints: Vec<String>,
    version: Option<i64>,
}

/// A static service: always resolvable, with the app graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticService {
    /// Where it listens.
    pub endpoints: Vec<Endpoint>,
    /// Its protocol version.
    pub version: u64,
}

/// A validated locator configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatorConfig {
    /// Where the locator listens.
    pub listen: SocketAddr,
    /// Where the admin HTTP API listens, if anywhere.
    pub admin: Option<SocketAddr>,
    /// The bearer token admin writes (PUT, POST, DELETE) need, read from
    /// `admin_token_file`; `None`: writes need none (loopback only).
    pub admin_token: Option<crate::admin::Token>,
    /// How long an admin connection may take to send a request head.
    pub admin_header_timeout: std::time::Duration,
    /// The uuid `uuid()` reports; random when `None`.
    pub uuid: Option<String>,
    /// Services that resolve without being published.
    pub services: BTreeMap<String, StaticService>,
    /// Routing groups: group → member → weight.
    pub groups: BTreeMap<String, BTreeMap<String, u32>>,
    /// The shared store, if this locator is part of a cluster.
    pub cluster: Option<ClusterConfig>,
}

impl Default for LocatorConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            admin: None,
            admin_token: None,
            admin_header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT,
            uuid: None,
            services: BTreeMap::new(),
            groups: BTreeMap::new(),
            cluster: None,
        }
    }
}

/// The default `admin_header_timeout_ms`: the gateway's
/// `limits.header_timeout_ms` default.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a config file; a failure names the file.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        key: "(file)".into(),
        reason: e.to_string(),
    })
}

impl LocatorConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_file(path)?, path)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: file.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let raw: LocatorFile = toml::from_str(text).map_err(|e| {
            // toml's message names the key (e.g. "unknown field `listn`") and
            // the line; keep it whole, on one line.
            err(
                "(syntax)",
                e.to_string().replace('\n', " ").trim().to_owned(),
            )
        })?;
        let addr = |key: &str, value: &str| -> Result<SocketAddr, ConfigError> {
            value
                .parse()
                .map_err(|_| err(key, format!("`{value}` is not an ip:port address")))
        };
        let listen = match &raw.listen {
            Some(v) => addr("listen", v)?,
            None => DEFAULT_LISTEN,
        };
        let admin = raw.admin.as_deref().map(|v| addr("admin", v)).transpose()?;
        let admin_token = raw
            .admin_token_file
            .as_deref()
            .map(|v| {
                crate::admin::Token::load(Path::new(v))
                    .map_err(|e| err("admin_token_file", e.to_string()))
            })
            .transpose()?;
        let admin_header_timeout = match raw.admin_header_timeout_ms {
            None => DEFAULT_ADMIN_HEADER_TIMEOUT,
            Some(ms) if (1..=3_600_000).contains(&ms) => {
                std::time::Duration::from_millis(ms as u64)
            }
            Some(ms) => {
                return Err(err(
                    "admin_header_timeout_ms",
                    format!("must be from 1 to 3600000, not {ms}"),
                ));
            }
        };
        if raw.uuid.as_deref() == Some("") {
            return Err(err("uuid", "must not be empty".into()));
        }
        let mut services = BTreeMap::new();
        for (name, service) in raw.services {
            let key = format!("services.{name}");
            if name.is_empty() {
                return Err(err(&key, "a service name must not be empty".into()));
            }
            if service.endpoints.is_empty() {
                return Err(err(
                    &format!("{key}.endpoints"),
                    "needs at least one ip:port".into(),
                ));
            }
            let endpoints = service
                .endpoints
                .iter()
                .map(|e| addr(&format!("{key}.endpoints"), e).map(Endpoint::from))
                .collect::<Result<_, _>>()?;
            let version = match service.version {
                None => crate::proto::app::PROTOCOL_VERSION,
                Some(v) if v >= 1 => v as u64,
                Some(v) => {
                    return Err(err(
                        &format!("{key}.version"),
                        format!("must be at least 1, not {v}"),
                    ));
                }
            };
            services.insert(name, StaticService { endpoints, version });
        }
        let mut groups = BTreeMap::new();
        for (name, members) in raw.groups {
            let key = format!("groups.{name}");
            let mut weights = BTreeMap::new();
            for (member, weight) in members {
                let weight = u32::try_from(weight).map_err(|_| {
                    err(
                        &format!("{key}.{member}"),
                        format!(
                            "a weight must be a whole number from 0 to {}, not {weight}",
                            u32::MAX
                        ),
                    )
                })?;
                weights.insert(member, weight);
            }
            validate_group(&weights).map_err(|reason| err(&key, reason))?;
            groups.insert(name, weights);
        }
        let cluster = match raw.cluster {
            None => None,
            Some(c) => {
                if c.etcd.is_empty() {
                    return Err(err(
                        "cluster.etcd",
                        "needs at least one http:// or https://host:port".into(),
                    ));
                }
                // Relative paths are relative to the config file.
                let base = file.parent().unwrap_or(Path::new("."));
                let security = EtcdSecurity {
                    ca_file: c.etcd_ca_file.map(|p| base.join(p)),
                    cert_file: c.etcd_cert_file.map(|p| base.join(p)),
                    key_file: c.etcd_key_file.map(|p| base.join(p)),
                    user: c.etcd_user,
                    password_file: c.etcd_password_file.map(|p| base.join(p)),
                };
                // Builds the client once: checks the URLs, reads the TLS
                // files and the password, and refuses unsafe mixes.
                if let Err(e) = super::cluster::EtcdClient::with_security(&c.etcd, &security) {
                    return Err(err(&format!("cluster.{}", e.key), e.reason));
                }
                let prefix = c.prefix.unwrap_or_else(|| DEFAULT_PREFIX.into());
                let prefix = prefix.trim_end_matches('/').to_owned();
                if !prefix.starts_with('/') {
                    return Err(err("cluster.prefix", "must start with `/`".into()));
                }
                let lease_ttl = match c.lease_ttl_ms {
                    None => DEFAULT_LEASE_TTL,
                    Some(ms) if (1000..=3_600_000).contains(&ms) => {
                        std::time::Duration::from_millis(ms as u64)
                    }
                    Some(ms) => {
                        return Err(err(
                            "cluster.lease_ttl_ms",
                            format!("must be from 1000 to 3600000, not {ms}"),
                        ));
                    }
                };
                Some(ClusterConfig {
                    etcd: c.etcd,
                    prefix,
                    lease_ttl,
                    security,
                })
            }
        };
        let config = Self {
            listen,
            admin,
            admin_token,
            admin_header_timeout,
            uuid: raw.uuid,
            services,
            groups,
            cluster,
        };
        if let Some(reason) = config.admin_exposure() {
            return Err(err("admin", reason));
        }
        Ok(config)
    }

    /// Why the admin address may not be used: it is not a loopback address
    /// and there is no admin token. `None` when it is fine.
    pub fn admin_exposure(&self) -> Option<String> {
        let addr = self.admin?;
        (!addr.ip().is_loopback() && self.admin_token.is_none()).then(|| {
            format!(
                "the admin API on `{addr}` (not loopback) needs a token for its \
                 writes: set admin_token_file (or --admin-token-file)"
            )
        })
    }
}

/// Checks that a group's weights make a continuum.
pub fn validate_group(weights: &BTreeMap<String, u32>) -> Result<(), String> {
    if weights.keys().any(String::is_empty) {
        return Err("a member name must not be empty".into());
    }
    Continuum::new(weights).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LocatorConfig, ConfigError> {
        LocatorConfig::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_and_full_form() {
        let config = parse("").unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN);
        let config = parse(
            r#"
            listen = "0.0.0.0:1"
            admin = "127.0.0.1:2"
            [services.echo]
            endpoints = ["127.0.0.1:41234", "[::1]:41234"]
            [groups.canary]
            echo-v1 = 3
            echo-v2 = 1
            "#,
        )
        .unwrap();
        assert_eq!(config.services["echo"].endpoints.len(), 2);
        assert_eq!(config.services["echo"].version, 1);
        assert_eq!(config.groups["canary"]["echo-v1"], 3);
        assert_eq!(config.cluster, None);
        let config = parse("[cluster]\netcd = [\"http://127.0.0.1:2379\"]").unwrap();
        assert_eq!(
            config.cluster,
            Some(ClusterConfig::new(vec!["http://127.0.0.1:2379".into()]))
        );
        let config =
            parse("[cluster]\netcd = [\"http://e:1\"]\nprefix = \"/x/\"\nlease_ttl_ms = 3000")
                .unwrap()
                .cluster
                .unwrap();
        assert_eq!(config.prefix, "/x");
        assert_eq!(config.lease_ttl, std::time::Duration::from_secs(3));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let cases = [
            ("listn = \"x\"", "listn"),
            ("listen = \"nope\"", "listen"),
            ("[services.a]\nendpoints = []", "services.a.endpoints"),
            (
                "[services.a]\nendpoints = [\"1.2.3.4:5\"]\nversion = 0",
                "services.a.version",
            ),
            ("[groups.g]\nv1 = -1", "groups.g.v1"),
            ("[groups.g]\nv1 = 0", "groups.g"),
            ("[groups.g]", "groups.g"),
            (
                "[services.a]\nendpoints = [\"1.2.3.4:5\"]\nport = 1",
                "port",
            ),
            ("[cluster]\netcd = []", "cluster.etcd"),
            ("[cluster]\netcd = [\"etcd:1\"]", "cluster.etcd"),
            ("[cluster]\netcd = [\"http://a:1\"]\nttl = 1", "ttl"),
            (
                "[cluster]\netcd = [\"http://a:1\"]\nlease_ttl_ms = 10",
                "cluster.lease_ttl_ms",
            ),
            (
                "[cluster]\netcd = [\"http://a:1\"]\nprefix = \"x\"",
                "cluster.prefix",
            ),
            (
                "[cluster]\netcd = [\"https://a:1\"]",
                "cluster.etcd_ca_file",
            ),
            (
                "[cluster]\netcd = [\"http://a:1\"]\netcd_ca_file = \"ca.pem\"",
                "cluster.etcd_ca_file",
            ),
            (
                "[cluster]\netcd = [\"https://a:1\"]\netcd_ca_file = \"/nonexistent/ca.pem\"",
                "cluster.etcd_ca_file",
            ),
            (
                "[cluster]\netcd = [\"http://a:1\"]\netcd_cert_file = \"c.pem\"",
                "cluster.etcd_cert_file",
            ),
            (
                "[cluster]\netcd = [\"http://127.0.0.1:1\"]\netcd_user = \"u\"",
                "cluster.etcd_password_file",
            ),
            (
                "[cluster]\netcd = [\"http://a:1\"]\netcd_user = \"u\"\netcd_password_file = \"p\"",
                "cluster.etcd_user",
            ),
            (
                "[cluster]\netcd = [\"http://127.0.0.1:1\"]\netcd_user = \"u\"\netcd_password_file = \"/nonexistent/p\"",
                "cluster.etcd_password_file",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err();
            let shown = e.to_string();
            assert!(shown.starts_with("test.toml: "), "{shown}");
            assert!(shown.contains(key), "{text:?} → {shown}");
        }
    }
}
