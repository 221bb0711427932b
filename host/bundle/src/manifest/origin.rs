//! HTTP egress origins: `scheme://host[:port]`, with a leading `*.` wildcard for subdomains.

use std::fmt;

/// One parsed entry of `capabilities.http.allow`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowedOrigin {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lowercase, without the `*.` wildcard prefix. IPv6 literals keep their
    /// brackets.
    pub host: String,
    /// Whether the entry was `*.host`: it then allows every subdomain of `host` (at any
    /// depth) but not `host` itself.
    pub wildcard: bool,
    /// The explicit port, if the entry named one.
    pub port: Option<u16>,
}

/// Why an allow-list entry is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{origin}` is not an origin `scheme://host[:port]`: {reason}")]
pub struct OriginError {
    /// The entry as written.
    pub origin: String,
    /// What is wrong with it.
    pub reason: String,
}

impl AllowedOrigin {
    /// Parses an allow-list entry such as `https://api.github.com` or
    /// `https://*.example.com:8443`.
    pub fn parse(origin: &str) -> Result<Self, OriginError> {
        let fail = |reason: &str| OriginError {
            origin: origin.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = origin
            .split_once("://")
            .ok_or_else(|| fail("missing `://` after the scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(fail("the scheme must be `http` or `https`"));
        }
        if rest.contains('@') {
            return Err(fail("user information is not allowed"));
        }
        if rest.contains(['?', '#']) {
            return Err(fail("a query or fragment is not allowed"));
        }
        if rest.contains('/') {
            return Err(fail("a path is not allowed (not even `/`)"));
        }
        let (host_part, port) = split_port(rest).map_err(fail)?;
        let (wildcard, host) = match host_part.strip_prefix("*.") {
            Some(host) => (true, host),
            None => (false, host_part),
        };
        if host.starts_with('[') {
            if wildcard {
                return Err(fail("a wildcard cannot apply to an IP address"));
            }
            check_ipv6_literal(host).map_err(fail)?;
        } else {
            check_dns_host(host).map_err(fail)?;
            if wildcard && !host.contains('.') {
                return Err(fail(
                    "a wildcard needs at least two labels after `*.` (e.g. `*.example.com`)",
                ));
            }
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            wildcard,
            port,
        })
    }

    /// The port this entry allows: the explicit one, or the scheme's default.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| default_port(&self.scheme))
    }

    /// Whether a request to `scheme://host[:port]` is allowed by this entry. `host` is
    /// compared case-insensitively; a missing port means the scheme's default.
    pub fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        if port.unwrap_or_else(|| default_port(&self.scheme)) != self.effective_port() {
            return false;
        }
        let host = host.to_ascii_lowercase();
        if self.wildcard {
            host.strip_suffix(self.host.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty())
        } else {
            host == self.host
        }
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

/// Splits `host[:port]`, minding bracketed IPv6 literals.
fn split_port(rest: &str) -> Result<(&str, Option<u16>), &'static str> {
    let colon = if rest.starts_with('[') {
        let end = rest.find(']').ok_or("unterminated `[` in an IPv6 host")?;
        match &rest[end + 1..] {
            "" => None,
            after if after.starts_with(':') => Some(end + 1),
            _ => return Err("unexpected characters after the IPv6 host"),
        }
    } else {
        rest.rfind(':')
    };
    let Some(colon) = colon else {
        return Ok((rest, None));
    };
    let digits = &rest[colon + 1..];
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port must be a number from 1 to 65535");
    }
    match digits.parse::<u16>() {
        Ok(port) if port > 0 => Ok((&rest[..colon], Some(port))),
        _ => Err("the port must be a number from 1 to 65535"),
    }
}

fn check_dns_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.len() > 253 {
        return Err("the host is longer than 253 characters");
    }
    if host.contains('*') {
        return Err("`*` is only allowed as a leading `*.` wildcard");
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("every host label must have 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("the host may only use lowercase letters, digits, `-` and `.`");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a host label cannot start or end with `-`");
        }
    }
    Ok(())
}

fn check_ipv6_literal(host: &str) -> Result<(), &'static str> {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .ok_or("malformed IPv6 host")?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .map(|_| ())
        .map_err(|_| "malformed IPv6 host")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_and_wildcard_origins() {
        let o = AllowedOrigin::parse("https://api.github.com").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str()),
            ("https", "api.github.com")
        );
        assert!(!o.wildcard);
        assert_eq!(o.port, None);
        assert_eq!(o.effective_port(), 443);

        let w = AllowedOrigin::parse("https://*.example.com:8443").unwrap();
        assert!(w.wildcard);
        assert_eq!(w.host, "example.com");
        assert_eq!(w.port, Some(8443));
        assert_eq!(w.to_string(), "https://*.example.com:8443");

        let ip = AllowedOrigin::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(ip.effective_port(), 8080);
        let v6 = AllowedOrigin::parse("http://[::1]:9000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", Some(9000)));
        assert!(AllowedOrigin::parse("http://[::1]").unwrap().port.is_none());
    }

    #[test]
    fn refuses_what_is_not_an_origin() {
        for bad in [
            "api.github.com",
            "ftp://example.com",
            "HTTPS://example.com",
            "https://example.com/",
            "https://example.com/path",
            "https://example.com?q=1",
            "https://user@example.com",
            "https://",
            "https://Example.com",
            "https://exa_mple.com",
            "https://example.com:0",
            "https://example.com:70000",
            "https://example.com:",
            "https://*",
            "https://*.com",
            "https://a.*.example.com",
            "https://-a.example.com",
            "https://a..b",
            "https://[::1",
            "https://[nope]",
            "https://*.[::1]",
        ] {
            let err = AllowedOrigin::parse(bad);
            assert!(err.is_err(), "{bad} should be refused");
            assert!(err.unwrap_err().to_string().contains(bad));
        }
    }

    #[test]
    fn matches_requests() {
        let exact = AllowedOrigin::parse("https://api.github.com").unwrap();
        assert!(exact.matches("https", "api.github.com", None));
        assert!(exact.matches("https", "API.github.com", Some(443)));
        assert!(!exact.matches("http", "api.github.com", None));
        assert!(!exact.matches("https", "api.github.com", Some(8443)));
        assert!(!exact.matches("https", "evil.api.github.com", None));

        let wild = AllowedOrigin::parse("https://*.example.com:8443").unwrap();
        assert!(wild.matches("https", "a.example.com", Some(8443)));
        assert!(wild.matches("https", "a.b.example.com", Some(8443)));
        assert!(!wild.matches("https", "example.com", Some(8443)));
        assert!(!wild.matches("https", "badexample.com", Some(8443)));
        assert!(!wild.matches("https", ".example.com", Some(8443)));
        assert!(!wild.matches("https", "a.example.com", None));
    }
}
