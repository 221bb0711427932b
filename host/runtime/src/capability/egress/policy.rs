//! The operator's egress policy and the origin check of one outgoing request:
//! the install's allow-list ∩ the operator's policy.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_bundle::manifest::AllowedOrigin;
use serde::{Deserialize, Serialize};

/// Operator settings applied to the egress of every install, on top of each manifest's
/// allow-list: the effective allow-list is the manifest's ∩ this policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EgressPolicy {
    /// Refuse every outgoing request, whatever the manifests allow.
    pub deny_all: bool,
    /// Hosts no install may reach: `host` (exact) or `*.host` (every subdomain).
    #[schemars(with = "Vec<String>")]
    pub deny_hosts: Vec<HostPattern>,
    /// Address ranges that are reachable although they are special-purpose (loopback,
    /// private, link-local...). A cloud metadata address is only unlocked by an entry that
    /// names exactly that address (`/32` or `/128`).
    #[schemars(with = "Vec<String>")]
    pub allow_cidrs: Vec<IpNet>,
    /// Address ranges that are never reachable, even when public or in `allow_cidrs`.
    #[schemars(with = "Vec<String>")]
    pub deny_cidrs: Vec<IpNet>,
    /// Largest request body sent, in bytes.
    pub max_request_bytes: u64,
    /// Largest response body received, in bytes; a longer body is cut with
    /// `HTTP-response-body-size`.
    pub max_response_bytes: u64,
    /// Bound on name resolution, connecting and the TLS and HTTP handshakes, in
    /// milliseconds, when the guest sets no lower connect timeout.
    pub connect_timeout_ms: u64,
    /// Outgoing requests one call may start; later ones fail with
    /// `connection-limit-reached`.
    pub max_requests_per_call: u32,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy {
            deny_all: false,
            deny_hosts: Vec::new(),
            allow_cidrs: Vec::new(),
            deny_cidrs: Vec::new(),
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 8 * 1024 * 1024,
            connect_timeout_ms: 10_000,
            max_requests_per_call: 32,
        }
    }
}

/// A host the operator forbids: `example.com` (that host only) or `*.example.com` (every
/// subdomain of it, not `example.com` itself). IPv4 literals and bracketed IPv6 literals
/// are accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern {
    host: String,
    wildcard: bool,
}

/// A string that is not a host pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{pattern}` is not a host pattern `host` or `*.host`: {reason}")]
pub struct HostPatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

impl HostPattern {
    /// Parses `example.com`, `*.example.com`, `10.0.0.1` or `[fd00::1]` (lowercase, no
    /// scheme, no port).
    pub fn parse(pattern: &str) -> Result<Self, HostPatternError> {
        let fail = |reason: &str| HostPatternError {
            pattern: pattern.to_owned(),
            reason: reason.to_owned(),
        };
        if pattern.contains("://") {
            return Err(fail("a scheme is not allowed"));
        }
        let origin =
            AllowedOrigin::parse(&format!("http://{pattern}")).map_err(|e| fail(&e.reason))?;
        if origin.port.is_some() {
            return Err(fail("a port is not allowed"));
        }
        Ok(HostPattern {
            host: origin.host,
            wildcard: origin.wildcard,
        })
    }

    /// Whether `host` (lowercase, IPv6 in brackets) is covered by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.strip_suffix(self.host.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty())
        } else {
            host == self.host
        }
    }
}

impl TryFrom<String> for HostPattern {
    type Error = HostPatternError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        HostPattern::parse(&value)
    }
}

impl From<HostPattern> for String {
    fn from(pattern: HostPattern) -> Self {
        pattern.to_string()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)
    }
}

/// Where an allowed request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `https` rather than `http`.
    pub(crate) https: bool,
    /// The host, lowercase; an IPv6 literal keeps its brackets.
    pub(crate) host: String,
    /// The port, explicit or the scheme's default.
    pub(crate) port: u16,
}

impl Target {
    /// The host as an IP address, if it is an IP literal.
    pub(crate) fn ip_literal(&self) -> Option<IpAddr> {
        let bare = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        bare.parse().ok()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// Why a request was refused before any connection was attempted. The guest sees
/// `HTTP-request-denied`; the operator's log gets this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denial {
    /// The operator's `deny_all` switch is on.
    #[error("the operator's egress policy denies all outgoing requests")]
    DenyAll,
    /// The URI cannot name an allowed origin.
    #[error("the request URI `{uri}` is not usable: {reason}")]
    Malformed {
        /// The URI as the guest set it.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The origin is not in the install's allow-list.
    #[error("origin `{0}` is not in the install's `http` allow-list")]
    NotAllowed(String),
    /// The operator forbids the host.
    #[error("host `{host}` is forbidden by the operator's `deny_hosts` entry `{pattern}`")]
    HostForbidden {
        /// The requested host.
        host: String,
        /// The matching pattern.
        pattern: String,
    },
}

/// Checks the origin of `uri` against `allow` (the install's allow-list) and `policy`.
pub(crate) fn authorize(
    uri: &http::Uri,
    allow: &[AllowedOrigin],
    policy: &EgressPolicy,
) -> Result<Target, Denial> {
    if policy.deny_all {
        return Err(Denial::DenyAll);
    }
    let malformed = |reason| Denial::Malformed {
        uri: uri.to_string(),
        reason,
    };
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(malformed("the scheme must be `http` or `https`")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| malformed("the host is missing"))?;
    if authority.as_str().contains('@') {
        return Err(malformed("user information is not allowed"));
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err(malformed("the host is missing"));
    }
    if host.ends_with('.') {
        return Err(malformed("a host ending in `.` is not allowed"));
    }
    let port = match authority.port_u16() {
        Some(0) => return Err(malformed("port 0 is not allowed")),
        Some(port) => port,
        None if authority.as_str().ends_with(':') => {
            return Err(malformed("the port is empty"));
        }
        None if https => 443,
        None => 80,
    };
    let target = Target { https, host, port };
    if let Some(pattern) = policy.deny_hosts.iter().find(|p| p.matches(&target.host)) {
        return Err(Denial::HostForbidden {
            host: target.host,
            pattern: pattern.to_string(),
        });
    }
    let scheme = if https { "https" } else { "http" };
    if !allow
        .iter()
        .any(|origin| origin.matches(scheme, &target.host, Some(port)))
    {
        return Err(Denial::NotAllowed(target.to_string()));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(origins: &[&str]) -> Vec<AllowedOrigin> {
        origins
            .iter()
            .map(|o| AllowedOrigin::parse(o).unwrap())
            .collect()
    }

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn allowed_origins_pass_with_default_and_explicit_ports() {
        let list = allow(&["https://api.github.com", "http://127.0.0.1:8080"]);
        let policy = EgressPolicy::default();
        let t = authorize(&uri("https://api.github.com/repos/a/b"), &list, &policy).unwrap();
        assert_eq!(
            t,
            Target {
                https: true,
                host: "api.github.com".into(),
                port: 443
            }
        );
        let t = authorize(&uri("https://API.GitHub.com:443/"), &list, &policy).unwrap();
        assert_eq!(t.host, "api.github.com");
        let t = authorize(&uri("http://127.0.0.1:8080/x"), &list, &policy).unwrap();
        assert_eq!(t.ip_literal(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(t.to_string(), "http://127.0.0.1:8080");
    }

    #[test]
    fn other_scheme_host_or_port_is_not_allowed() {
        let list = allow(&["https://api.github.com", "https://*.example.com"]);
        let policy = EgressPolicy::default();
        for denied in [
            "http://api.github.com/",
            "https://api.github.com:8443/",
            "https://evil.api.github.com/",
            "https://github.com/",
            "https://example.com/",
            "https://a.example.com:444/",
        ] {
            let err = authorize(&uri(denied), &list, &policy).unwrap_err();
            assert!(matches!(err, Denial::NotAllowed(_)), "{denied}: {err}");
            assert!(err.to_string().contains("allow-list"));
        }
        assert!(authorize(&uri("https://a.b.example.com/"), &list, &policy).is_ok());
    }

    #[test]
    fn malformed_uris_are_denied() {
        let list = allow(&["https://api.github.com"]);
        let policy = EgressPolicy::default();
        for (bad, reason) in [
            ("/relative", "scheme"),
            ("https://user@api.github.com/", "user information"),
            ("https://api.github.com./", "ending in `.`"),
            ("ftp://api.github.com/", "scheme"),
        ] {
            let err = authorize(&uri(bad), &list, &policy).unwrap_err();
            assert!(err.to_string().contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn operator_policy_applies_on_top_of_the_allow_list() {
        let list = allow(&["https://*.example.com", "https://api.github.com"]);
        let policy = EgressPolicy {
            deny_hosts: vec![HostPattern::parse("secret.example.com").unwrap()],
            ..EgressPolicy::default()
        };
        let err = authorize(&uri("https://secret.example.com/"), &list, &policy).unwrap_err();
        assert!(matches!(err, Denial::HostForbidden { .. }));
        assert!(err.to_string().contains("secret.example.com"));
        assert!(authorize(&uri("https://public.example.com/"), &list, &policy).is_ok());

        let deny_all = EgressPolicy {
            deny_all: true,
            ..EgressPolicy::default()
        };
        assert_eq!(
            authorize(&uri("https://api.github.com/"), &list, &deny_all),
            Err(Denial::DenyAll)
        );
    }

    #[test]
    fn host_patterns_parse_and_match() {
        let wild = HostPattern::parse("*.internal.example").unwrap();
        assert!(wild.matches("a.internal.example"));
        assert!(wild.matches("a.b.internal.example"));
        assert!(!wild.matches("internal.example"));
        assert!(!wild.matches("xinternal.example"));
        assert_eq!(wild.to_string(), "*.internal.example");
        let ip = HostPattern::parse("[fd00::1]").unwrap();
        assert!(ip.matches("[fd00::1]"));
        for bad in ["https://a.com", "a.com:80", "A.com", "*", "a.com/x", ""] {
            let err = HostPattern::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn policy_deserializes_with_defaults_and_validates_patterns() {
        let policy: EgressPolicy = serde_json::from_value(serde_json::json!({
            "deny_hosts": ["*.corp.example", "metadata.google.internal"],
            "allow_cidrs": ["127.0.0.1/32", "fd00::/8"],
        }))
        .unwrap();
        assert_eq!(policy.deny_hosts.len(), 2);
        assert_eq!(policy.allow_cidrs[0].to_string(), "127.0.0.1/32");
        assert_eq!(policy.max_response_bytes, 8 * 1024 * 1024);
        assert_eq!(
            serde_json::to_value(&policy).unwrap()["deny_hosts"][0],
            "*.corp.example"
        );

        let err = serde_json::from_value::<EgressPolicy>(serde_json::json!({
            "deny_hosts": ["Bad Host"]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("Bad Host"), "{err}");
        assert!(
            serde_json::from_value::<EgressPolicy>(serde_json::json!({ "allow_cidrs": ["nope"] }))
                .is_err()
        );
        assert!(
            serde_json::from_value::<EgressPolicy>(serde_json::json!({ "deny_everything": true }))
                .is_err()
        );
    }
}
