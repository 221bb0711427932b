//! The fake of `wasi:http/outgoing-handler`: the host's checks in the host's order — the
//! request's headers (`forbidden` for the ones the platform sets or refuses), the URL's
//! host and port, the allow-list, 32 requests per call, a declared body over 1 MiB, an IP
//! literal in a range the platform forbids — and then a scripted answer instead of the
//! network.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::bindings::handler::wasi::http::types::{ErrorCode, HeaderError};
use crate::fetch::FetchError;
use crate::http::{Method, Response};

use super::manifest::split_port;
use super::{not_granted, with_state};

const MAX_REQUESTS_PER_CALL: u32 = 32;
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Headers a guest may not set: the host sets them, or they would let a guest pose as a
/// proxy or the platform.
const FORBIDDEN_HEADERS: [&str; 10] = [
    "connection",
    "host",
    "http2-settings",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
];

/// A request the handler sent that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// The method.
    pub method: Method,
    /// The URL as the handler gave it.
    pub url: String,
    /// The headers, names in lower case, in the order given.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The scripted answers, what was sent, and the current call's count of requests.
#[derive(Default)]
pub(crate) struct Egress {
    answers: BTreeMap<(String, String), Answer>,
    pub(crate) sent: Vec<SentRequest>,
    call_requests: u32,
}

impl Egress {
    pub(crate) fn begin_call(&mut self) {
        self.call_requests = 0;
    }

    pub(crate) fn script(&mut self, method: Method, url: String, response: Response) {
        let (status, headers, body) = response.into_parts();
        self.answers.insert(
            (method.to_string(), url),
            Answer {
                status,
                headers,
                body,
            },
        );
    }
}

/// How the host refuses a request; `fetch` turns it into its [`FetchError`].
pub(crate) enum Refusal {
    Header(String, HeaderError),
    Code(ErrorCode),
    Fetch(FetchError),
}

/// Sends one request through the fake: `https` and `authority` as `fetch` parsed them
/// from `url`.
pub(crate) fn send(
    method: &Method,
    url: &str,
    https: bool,
    authority: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, Refusal> {
    with_state("fetch::fetch", |state| {
        for (name, value) in headers {
            check_header(name, value).map_err(|error| Refusal::Header(name.clone(), error))?;
        }
        let Some(allow) = &state.grants.http else {
            not_granted("wasi:http/outgoing-handler", "http");
        };
        let Ok((host, port)) = split_port(authority) else {
            return Err(Refusal::Code(ErrorCode::HttpRequestDenied));
        };
        if host.ends_with('.') {
            return Err(Refusal::Code(ErrorCode::HttpRequestDenied));
        }
        let port = port.unwrap_or(if https { 443 } else { 80 });
        if !allow.iter().any(|origin| origin.allows(https, host, port)) {
            return Err(Refusal::Code(ErrorCode::HttpRequestDenied));
        }
        let egress = &mut state.egress;
        if egress.call_requests >= MAX_REQUESTS_PER_CALL {
            return Err(Refusal::Code(ErrorCode::ConnectionLimitReached));
        }
        egress.call_requests += 1;
        let declared = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_REQUEST_BYTES as u64)
            || body.len() > MAX_REQUEST_BYTES
        {
            return Err(Refusal::Code(ErrorCode::HttpRequestBodySize(declared)));
        }
        let literal = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(address) = literal.parse::<IpAddr>()
            && forbidden(address)
        {
            return Err(Refusal::Code(ErrorCode::DestinationIpProhibited));
        }
        egress.sent.push(SentRequest {
            method: method.clone(),
            url: url.to_owned(),
            headers: headers.to_vec(),
            body: body.to_vec(),
        });
        let Some(answer) = egress.answers.get(&(method.to_string(), url.to_owned())) else {
            return Err(Refusal::Fetch(FetchError::Failed(format!(
                "no answer is scripted for {method} {url}: the test host sends nothing to the \
                 network (script one with `TestHost::with_answer`)"
            ))));
        };
        Ok(answer
            .headers
            .iter()
            .fold(Response::new(answer.status), |response, (name, value)| {
                response.append_header(name, value.clone())
            })
            .with_body(answer.body.clone()))
    })
}

/// The checks `wasi:http/types.fields` makes on the host: a token name, a value without
/// CR, LF or NUL, and not a forbidden name.
fn check_header(name: &str, value: &str) -> Result<(), HeaderError> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(HeaderError::InvalidSyntax);
    }
    if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(HeaderError::Forbidden);
    }
    Ok(())
}

/// Whether the platform refuses to connect to `address` (without an operator's
/// `allow_cidrs`): loopback, private, link-local, multicast, documentation and other
/// special-purpose ranges, and IPv6 forms that embed such an IPv4 address.
pub(super) fn forbidden(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(address: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(address) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn forbidden_v4(address: Ipv4Addr) -> bool {
    const RANGES: [([u8; 4], u32); 16] = [
        ([0, 0, 0, 0], 8),
        ([127, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        ([169, 254, 0, 0], 16),
        ([100, 64, 0, 0], 10),
        ([224, 0, 0, 0], 4),
        ([240, 0, 0, 0], 4),
        ([192, 0, 2, 0], 24),
        ([198, 51, 100, 0], 24),
        ([203, 0, 113, 0], 24),
        ([192, 0, 0, 0], 24),
        ([192, 88, 99, 0], 24),
        ([198, 18, 0, 0], 15),
        ([255, 255, 255, 255], 32),
    ];
    // 100.100.100.200 and 168.63.129.16 are cloud metadata endpoints.
    address == Ipv4Addr::new(100, 100, 100, 200)
        || address == Ipv4Addr::new(168, 63, 129, 16)
        || RANGES
            .iter()
            .any(|(network, prefix)| in_v4(address, *network, *prefix))
}

fn in_v6(address: Ipv6Addr, network: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(address) & mask == u128::from(network) & mask
}

fn forbidden_v6(address: Ipv6Addr) -> bool {
    if let Some(v4) = address.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
    if in_v6(address, nat64, 96) {
        let embedded =
            Ipv4Addr::from(u32::try_from(u128::from(address) & 0xffff_ffff).unwrap_or(0));
        return forbidden_v4(embedded);
    }
    let ranges: [(Ipv6Addr, u32); 11] = [
        (Ipv6Addr::UNSPECIFIED, 96),
        (Ipv6Addr::LOCALHOST, 128),
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
        (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),
        (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
        (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    ];
    in_v6(address, Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64)
        || ranges
            .iter()
            .any(|(network, prefix)| in_v6(address, *network, *prefix))
}
