//! The part of `manifest.json` a [`TestHost`](super::TestHost) needs: the id, the version
//! and what `capabilities` requests, read as the platform reads it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use super::Grants;

/// Why a manifest could not be read; the text names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not a JSON object.
    #[error("the manifest is not a JSON object: {0}")]
    NotJson(String),
    /// A key has the wrong form.
    #[error("manifest key `{key}`: {reason}")]
    Invalid {
        /// The key, e.g. `capabilities.http.allow[0]`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

pub(super) struct Parsed {
    pub(super) id: String,
    pub(super) version: String,
    pub(super) grants: Grants,
}

pub(super) fn parse(text: &str) -> Result<Parsed, ManifestError> {
    let manifest: Value =
        serde_json::from_str(text).map_err(|error| ManifestError::NotJson(error.to_string()))?;
    let Value::Object(manifest) = manifest else {
        return Err(ManifestError::NotJson("it is not an object".to_owned()));
    };
    let string = |key: &str, default: &str| match manifest.get(key) {
        None => Ok(default.to_owned()),
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(invalid(key, "must be a string")),
    };
    let id = string("id", "com.example.test")?;
    let version = string("version", "0.1.0")?;
    let empty = serde_json::Map::new();
    let capabilities = match manifest.get("capabilities") {
        None => &empty,
        Some(Value::Object(capabilities)) => capabilities,
        Some(_) => return Err(invalid("capabilities", "must be an object")),
    };
    let flag = |key: &str, default: bool| match capabilities.get(key) {
        None => Ok(default),
        Some(Value::Bool(value)) => Ok(*value),
        Some(_) => Err(invalid(
            format!("capabilities.{key}"),
            "must be true or false",
        )),
    };
    let mut grants = Grants {
        log: flag("log", true)?,
        metrics: flag("metrics", false)?,
        cache: flag("cache", false)?,
        ..Grants::default()
    };
    if let Some(storage) = capabilities.get("storage") {
        let namespaces = strings(storage.get("namespaces"), "capabilities.storage.namespaces")?;
        if namespaces.is_empty() {
            return Err(invalid(
                "capabilities.storage.namespaces",
                "must name at least one namespace",
            ));
        }
        let max_bytes = match storage.get("max_bytes") {
            None => None,
            Some(value) => Some(value.as_u64().ok_or_else(|| {
                invalid(
                    "capabilities.storage.max_bytes",
                    "must be a non-negative integer",
                )
            })?),
        };
        grants.storage = Some((namespaces.into_iter().collect(), max_bytes));
    }
    if let Some(secrets) = capabilities.get("secrets") {
        grants.secrets = strings(Some(secrets), "capabilities.secrets")?
            .into_iter()
            .collect::<BTreeSet<_>>();
    }
    if let Some(http) = capabilities.get("http") {
        let allow = strings(http.get("allow"), "capabilities.http.allow")?;
        let origins = allow
            .iter()
            .enumerate()
            .map(|(i, origin)| {
                Origin::parse(origin)
                    .map_err(|why| invalid(format!("capabilities.http.allow[{i}]"), why))
            })
            .collect::<Result<Vec<_>, _>>()?;
        grants.http = Some(origins);
    }
    Ok(Parsed {
        id,
        version,
        grants,
    })
}

fn strings(value: Option<&Value>, key: &str) -> Result<Vec<String>, ManifestError> {
    let Some(Value::Array(items)) = value else {
        return Err(invalid(key, "must be a list of strings"));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(key, "must be a list of strings"))
        })
        .collect()
}

/// One entry of the egress allow-list: `scheme://host[:port]`, the host possibly `*.`
/// and a domain (every subdomain at any depth, not the domain itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    https: bool,
    /// Lowercase; for a wildcard, the domain after `*.`.
    host: String,
    wildcard: bool,
    port: u16,
}

impl Origin {
    /// Reads an allow-list entry; the error says what is wrong.
    pub fn parse(origin: &str) -> Result<Origin, String> {
        let (scheme, rest) = origin
            .split_once("://")
            .ok_or("an origin is `scheme://host[:port]`")?;
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err("the scheme must be `http` or `https`".to_owned()),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err("an origin has no path, query, fragment or user information".to_owned());
        }
        let (host, port) = split_port(rest)?;
        let port = port.unwrap_or(if https { 443 } else { 80 });
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain),
            None => (false, host),
        };
        let valid = if let Some(literal) = host.strip_prefix('[') {
            !wildcard
                && literal
                    .strip_suffix(']')
                    .is_some_and(|inner| inner.parse::<Ipv6Addr>().is_ok())
        } else if host.parse::<Ipv4Addr>().is_ok() {
            !wildcard
        } else {
            is_dns_name(host)
        };
        if !valid {
            return Err(format!(
                "`{host}` is not a lowercase DNS name, an IPv4 literal or a bracketed IPv6 literal"
            ));
        }
        Ok(Origin {
            https,
            host: host.to_owned(),
            wildcard,
            port,
        })
    }

    #[cfg_attr(not(feature = "http-client"), allow(dead_code))]
    /// Whether a request to `host` (compared case-insensitively) and `port` over `https`
    /// or not is allowed by this entry.
    pub(crate) fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        if self.https != https || self.port != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            host == self.host
        }
    }
}

/// `host[:port]`, with a bracketed IPv6 host; the port must be 1-65535.
pub(crate) fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if rest.is_empty() => (host, None),
                    None => return Err(format!("`{authority}` is not `host[:port]`")),
                }
            }
            None => return Err(format!("`{authority}` has an unclosed `[`")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("the port `{port}` is not 1-65535")),
            Ok(port) => Some(port),
        },
    };
    Ok((host, port))
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}
