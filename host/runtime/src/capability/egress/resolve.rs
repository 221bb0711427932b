//! Name resolution and the address check: every resolved address is checked against the
//! special-purpose ranges and the operator's CIDR lists, and only the addresses that pass
//! are returned, so the client connects to exactly what was checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::time::Instant;
use wasmtime_wasi_http::Error;

use super::policy::{EgressPolicy, Target};

/// Cloud metadata endpoints: refused unless an `allow_cidrs` entry names exactly them.
const METADATA: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// Why an address is not reachable from a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddressRefusal {
    /// In a special-purpose range that no `allow_cidrs` entry covers.
    #[error("{0} address, not covered by the operator's `allow_cidrs`")]
    SpecialPurpose(&'static str),
    /// A cloud metadata endpoint.
    #[error("cloud metadata address, not named exactly by the operator's `allow_cidrs`")]
    Metadata,
    /// In an operator's `deny_cidrs` range.
    #[error("address in the operator's `deny_cidrs`")]
    Denied,
}

/// The special-purpose range `ip` is in, if any (IPv4-mapped IPv6 addresses are checked
/// as the IPv4 address they carry).
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "shared (CGNAT, 100.64.0.0/10)",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay (192.88.99.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if s[..6] == [0; 6] {
        return Some("IPv4-compatible (::/96)");
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return special_v4(Ipv4Addr::new(a, b, c, d)).map(|_| "NAT64 of a special-purpose IPv4");
    }
    Some(match s[0] {
        0x64 if s[1] == 0xff9b && s[2] == 1 => "local-use NAT64 (64:ff9b:1::/48)",
        0x100 if s[1..4] == [0; 3] => "discard-only (100::/64)",
        0x2001 if s[1] < 0x200 => "IETF protocol assignment (2001::/23)",
        0x2001 if s[1] == 0xdb8 => "documentation",
        0x2002 => "6to4 (2002::/16)",
        0x3fff if s[1] < 0x1000 => "documentation",
        x if x & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// Whether `policy` lets a guest connect to `ip`. `deny_cidrs` wins over everything;
/// `allow_cidrs` unlocks special-purpose ranges; metadata endpoints need an exact entry.
pub(crate) fn check_address(policy: &EgressPolicy, ip: IpAddr) -> Result<(), AddressRefusal> {
    let canonical = ip.to_canonical();
    let in_any = |nets: &[ipnet::IpNet]| {
        nets.iter()
            .any(|net| net.contains(&canonical) || net.contains(&ip))
    };
    if in_any(&policy.deny_cidrs) {
        return Err(AddressRefusal::Denied);
    }
    if METADATA.contains(&canonical) {
        let exact = policy
            .allow_cidrs
            .iter()
            .any(|net| net.prefix_len() == net.max_prefix_len() && net.contains(&canonical));
        return if exact {
            Ok(())
        } else {
            Err(AddressRefusal::Metadata)
        };
    }
    match special_purpose(canonical) {
        Some(_) if in_any(&policy.allow_cidrs) => Ok(()),
        Some(kind) => Err(AddressRefusal::SpecialPurpose(kind)),
        None => Ok(()),
    }
}

/// Resolves `target` (no lookup for an IP literal) by `deadline` and returns the
/// addresses `policy` allows, in resolver order. Fails with `DNS-timeout`, `DNS-error`, or
/// `destination-IP-prohibited` when no resolved address is allowed.
pub(crate) async fn resolve(
    target: &Target,
    policy: &EgressPolicy,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, Error> {
    let resolved: Vec<SocketAddr> = match target.ip_literal() {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => {
            let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
            match tokio::time::timeout_at(deadline, lookup).await {
                Err(_) => return Err(Error::DnsTimeout),
                Ok(Err(e)) => {
                    tracing::warn!(host = %target.host, error = %e, "egress name lookup failed");
                    return Err(Error::DnsError {
                        rcode: Some("name not resolved".into()),
                        info_code: None,
                    });
                }
                Ok(Ok(addrs)) => addrs.collect(),
            }
        }
    };
    if resolved.is_empty() {
        return Err(Error::DnsError {
            rcode: Some("no address".into()),
            info_code: None,
        });
    }
    let mut allowed = Vec::with_capacity(resolved.len());
    for addr in resolved {
        match check_address(policy, addr.ip()) {
            Ok(()) if !allowed.contains(&addr) => allowed.push(addr),
            Ok(()) => {}
            Err(refusal) => tracing::warn!(
                target = %target,
                address = %addr.ip(),
                reason = %refusal,
                "egress address refused"
            ),
        }
    }
    if allowed.is_empty() {
        return Err(Error::DestinationIpProhibited);
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow_cidrs: allow.iter().map(|c| c.parse().unwrap()).collect(),
            deny_cidrs: deny.iter().map(|c| c.parse().unwrap()).collect(),
            ..EgressPolicy::default()
        }
    }

    #[test]
    fn special_purpose_ranges_are_refused_by_default() {
        let p = EgressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.10",
            "198.51.100.1",
            "203.0.113.7",
            "198.18.0.1",
            "::",
            "::1",
            "fd12:3456::1",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(check_address(&p, ip(refused)).is_err(), "{refused}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = EgressPolicy::default();
        for allowed in [
            "140.82.112.5",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(check_address(&p, ip(allowed)), Ok(()), "{allowed}");
            assert_eq!(special_purpose(ip(allowed)), None);
        }
    }

    #[test]
    fn metadata_endpoints_need_an_exact_allow_entry() {
        for metadata in ["169.254.169.254", "fd00:ec2::254", "168.63.129.16"] {
            let broad = policy(&["169.254.0.0/16", "fd00::/8", "168.63.0.0/16"], &[]);
            assert_eq!(
                check_address(&broad, ip(metadata)),
                Err(AddressRefusal::Metadata),
                "{metadata}"
            );
            let bits = if metadata.contains(':') { 128 } else { 32 };
            let exact = policy(&[&format!("{metadata}/{bits}")], &[]);
            assert_eq!(check_address(&exact, ip(metadata)), Ok(()), "{metadata}");
        }
        assert!(check_address(&EgressPolicy::default(), ip("::ffff:169.254.169.254")).is_err());
    }

    #[test]
    fn operator_cidrs_allow_and_deny() {
        let p = policy(
            &["127.0.0.1/32", "10.0.0.0/8"],
            &["10.9.0.0/16", "8.8.8.0/24"],
        );
        assert_eq!(check_address(&p, ip("127.0.0.1")), Ok(()));
        assert_eq!(check_address(&p, ip("::ffff:127.0.0.1")), Ok(()));
        assert!(matches!(
            check_address(&p, ip("127.0.0.2")),
            Err(AddressRefusal::SpecialPurpose("loopback"))
        ));
        assert_eq!(check_address(&p, ip("10.1.0.1")), Ok(()));
        assert_eq!(
            check_address(&p, ip("10.9.1.1")),
            Err(AddressRefusal::Denied)
        );
        assert_eq!(
            check_address(&p, ip("8.8.8.8")),
            Err(AddressRefusal::Denied)
        );
        assert!(
            AddressRefusal::SpecialPurpose("loopback")
                .to_string()
                .contains("allow_cidrs")
        );
    }

    fn target(host: &str, port: u16) -> Target {
        Target {
            https: false,
            host: host.into(),
            port,
        }
    }

    #[tokio::test]
    async fn resolution_keeps_only_checked_addresses() {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let open = policy(&["127.0.0.0/8", "::1/128"], &[]);
        let addrs = resolve(&target("localhost", 8080), &open, deadline)
            .await
            .unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );

        let only_v4 = policy(&["127.0.0.1/32"], &[]);
        let addrs = resolve(&target("localhost", 80), &only_v4, deadline)
            .await
            .unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:80".parse().unwrap()]);

        let closed = EgressPolicy::default();
        assert!(matches!(
            resolve(&target("localhost", 80), &closed, deadline).await,
            Err(Error::DestinationIpProhibited)
        ));
        assert!(matches!(
            resolve(&target("[::1]", 80), &closed, deadline).await,
            Err(Error::DestinationIpProhibited)
        ));
        assert_eq!(
            resolve(&target("[::1]", 81), &open, deadline)
                .await
                .unwrap(),
            vec!["[::1]:81".parse().unwrap()]
        );
        assert!(matches!(
            resolve(&target("no-such-host.invalid", 80), &open, deadline).await,
            Err(Error::DnsError { .. } | Error::DnsTimeout)
        ));
    }
}
