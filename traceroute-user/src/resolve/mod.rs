//! Target resolution and reverse DNS.
//!
//! Targets arrive from HTTP paths, config files and command lines, so they are
//! validated before anything touches the resolver: a clear `INVALID_REQUEST`
//! beats a confusing resolver error, and names like `127.1` or `2130706433`
//! (which `getaddrinfo` would quietly turn into addresses) are refused.
//! Every resolver call is bounded by a timeout so a dead DNS server can never
//! hang a request.

use crate::error::ErrorCode;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest host name DNS can carry (RFC 1035 §2.3.4, without trailing dot).
pub(crate) const MAX_NAME: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// How much of a rejected host is echoed back in error messages.
const MAX_ECHO: usize = 100;

/// Which address family a trace should use when a name has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FamilyPreference {
    /// The resolver's first answer (its order follows RFC 6724 / gai.conf).
    #[default]
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl FamilyPreference {
    fn accepts(self, ip: &IpAddr) -> bool {
        match self {
            FamilyPreference::Any => true,
            FamilyPreference::V4 => ip.is_ipv4(),
            FamilyPreference::V6 => ip.is_ipv6(),
        }
    }
}

impl fmt::Display for FamilyPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FamilyPreference::Any => "any",
            FamilyPreference::V4 => "IPv4",
            FamilyPreference::V6 => "IPv6",
        })
    }
}

/// Error parsing a [`FamilyPreference`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address family {0:?} (expected any, v4 or v6)")]
pub struct ParseFamilyError(String);

impl FromStr for FamilyPreference {
    type Err = ParseFamilyError;

    /// Accepts the spellings people use on command lines: `any`, `v4`,
    /// `ipv4`, `4`, `inet`, `v6`, `ipv6`, `6`, `inet6` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "any" | "" => Ok(FamilyPreference::Any),
            "v4" | "ipv4" | "4" | "inet" => Ok(FamilyPreference::V4),
            "v6" | "ipv6" | "6" | "inet6" => Ok(FamilyPreference::V6),
            _ => Err(ParseFamilyError(s.to_owned())),
        }
    }
}

/// A resolved trace target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The address to trace.
    pub addr: IpAddr,
    /// Every address of the accepted family, in resolver order (`addr`
    /// first), for callers that want to report or try the others.
    pub all: Vec<IpAddr>,
    /// The target as the user named it: the host name without a trailing
    /// dot, or the address (without brackets) for literals.
    pub hostname: String,
}

/// Why a target could not be resolved; [`ResolveError::code`] gives the API
/// error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Not an IP literal and not a valid host name; never sent to DNS.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The rejected input (truncated).
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The resolver has no address for the name (or failed).
    #[error("cannot resolve {host}: {detail}")]
    NotFound {
        /// The name.
        host: String,
        /// The resolver's message.
        detail: String,
    },
    /// Addresses exist, but none in the requested family.
    #[error("{host} has no {family} address")]
    NoAddressInFamily {
        /// The name or literal.
        host: String,
        /// The family that was asked for.
        family: FamilyPreference,
    },
    /// The name resolves only to addresses a trace cannot have as its
    /// destination (multicast, broadcast, unspecified, IPv6 link-local).
    #[error("{host} resolves only to {class} ({address}): a trace needs a unicast destination")]
    Unusable {
        host: String,
        address: IpAddr,
        class: AddressClass,
    },
    /// The resolver did not answer in time.
    #[error("resolving {host} timed out after {} ms", .after.as_millis())]
    Timeout {
        /// The name.
        host: String,
        /// The timeout that expired.
        after: Duration,
    },
}

impl ResolveError {
    /// The API error code (`{"code": ...}` in HTTP error bodies).
    pub fn code(&self) -> ErrorCode {
        match self {
            ResolveError::InvalidHost { .. } | ResolveError::Unusable { .. } => {
                ErrorCode::InvalidRequest
            }
            ResolveError::NotFound { .. } | ResolveError::NoAddressInFamily { .. } => {
                ErrorCode::Dns
            }
            ResolveError::Timeout { .. } => ErrorCode::Timeout,
        }
    }

    fn invalid(host: &str, reason: &'static str) -> ResolveError {
        let mut shown: String = host.chars().take(MAX_ECHO).collect();
        if shown.len() < host.len() {
            shown.push('…');
        }
        ResolveError::InvalidHost {
            host: shown,
            reason,
        }
    }
}

/// Addresses a trace cannot have as its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    Multicast,
    Broadcast,
    Unspecified,
    /// IPv6 link-local: reachable only through a named interface.
    LinkLocal,
}

impl AddressClass {
    /// The class of `ip` when a trace cannot go to it.
    pub fn unusable(ip: IpAddr) -> Option<AddressClass> {
        match ip.to_canonical() {
            IpAddr::V4(v4) if v4.is_multicast() => Some(AddressClass::Multicast),
            IpAddr::V4(v4) if v4.is_broadcast() => Some(AddressClass::Broadcast),
            IpAddr::V4(v4) if v4.is_unspecified() => Some(AddressClass::Unspecified),
            IpAddr::V6(v6) if v6.is_multicast() => Some(AddressClass::Multicast),
            IpAddr::V6(v6) if v6.is_unspecified() => Some(AddressClass::Unspecified),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(AddressClass::LinkLocal),
            _ => None,
        }
    }

    /// Why a literal of this class is refused.
    fn reason(self) -> &'static str {
        match self {
            AddressClass::Multicast => {
                "is a multicast address: a trace needs a unicast destination"
            }
            AddressClass::Broadcast => {
                "is the broadcast address: a trace needs a unicast destination"
            }
            AddressClass::Unspecified => {
                "is the unspecified address: a trace needs a unicast destination"
            }
            AddressClass::LinkLocal => {
                "is an IPv6 link-local address: it needs an interface, and zone ids are not supported"
            }
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Multicast => "multicast addresses",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Unspecified => "the unspecified address",
            AddressClass::LinkLocal => "IPv6 link-local addresses",
        })
    }
}

/// Parses an IP literal: `198.18.0.1`, `2001:db8::1` or `[2001:db8::1]`;
/// an IPv4-mapped IPv6 address (`::ffff:198.18.0.1`) is the IPv4 address.
///
/// `Ok(None)` means "not a literal, treat it as a name". Zoned IPv6
/// addresses (`fe80::1%eth0`) are refused: a trace target must be routable
/// without naming an interface. So are addresses no trace can have as its
/// destination (see [`AddressClass`]).
pub fn parse_literal(host: &str) -> Result<Option<IpAddr>, ResolveError> {
    let parsed = parse_literal_syntax(host)?.map(|ip| ip.to_canonical());
    if let Some(class) = parsed.and_then(AddressClass::unusable) {
        return Err(ResolveError::invalid(host, class.reason()));
    }
    Ok(parsed)
}

fn parse_literal_syntax(host: &str) -> Result<Option<IpAddr>, ResolveError> {
    if let Some(rest) = host.strip_prefix('[') {
        let inner = rest
            .strip_suffix(']')
            .ok_or_else(|| ResolveError::invalid(host, "unbalanced '[' in IPv6 literal"))?;
        if inner.contains('%') {
            return Err(ResolveError::invalid(
                host,
                "IPv6 zone identifiers are not supported",
            ));
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| Some(IpAddr::V6(a)))
            .map_err(|_| ResolveError::invalid(host, "brackets must hold an IPv6 address"));
    }
    if host.contains(':') {
        if host.contains('%') {
            return Err(ResolveError::invalid(
                host,
                "IPv6 zone identifiers are not supported",
            ));
        }
        return host
            .parse::<Ipv6Addr>()
            .map(|a| Some(IpAddr::V6(a)))
            .map_err(|_| {
                ResolveError::invalid(
                    host,
                    "not a valid IPv6 address (':' cannot appear in host names)",
                )
            });
    }
    // Strict dotted quad only: inet_aton's forms (`127.1`, `0x7f.1`) are
    // refused by validate_host instead of being silently accepted.
    Ok(host.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
}

/// A label `inet_aton` would read as a number (decimal, octal or `0x` hex).
fn numeric_label(label: &str) -> bool {
    let lower = label.to_ascii_lowercase();
    match lower.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => lower.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Checks that `host` is a syntactically valid DNS host name (RFC 1123:
/// letters, digits and inner hyphens; labels of 1-63 characters; at most 253
/// in total; an optional trailing dot).
pub fn validate_host(host: &str) -> Result<(), ResolveError> {
    if host.is_empty() {
        return Err(ResolveError::invalid(host, "empty host"));
    }
    // Character problems first: they give the most useful message.
    for c in host.chars() {
        let reason = match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' => continue,
            c if c.is_control() => "contains control characters",
            c if c.is_whitespace() => "contains whitespace",
            '/' => "contains '/' (give a host, not a URL or prefix)",
            '%' => "contains '%'",
            ':' => "contains ':' (give the port separately)",
            '_' => "contains '_' (not allowed in host names)",
            c if !c.is_ascii() => "contains non-ASCII characters (use the xn-- form)",
            _ => "contains characters not allowed in host names",
        };
        return Err(ResolveError::invalid(host, reason));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > MAX_NAME {
        return Err(ResolveError::invalid(host, "longer than 253 characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(ResolveError::invalid(host, "empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(ResolveError::invalid(
                host,
                "label longer than 63 characters",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(ResolveError::invalid(host, "label starts or ends with '-'"));
        }
    }
    // RFC 1123 §2.1: a name must not look like a dotted-decimal address;
    // top-level labels are never all-numeric.
    let last = labels[labels.len() - 1];
    if last.bytes().all(|b| b.is_ascii_digit()) || labels.iter().all(|l| numeric_label(l)) {
        return Err(ResolveError::invalid(
            host,
            "looks like a numeric address but is not a valid IPv4 address",
        ));
    }
    Ok(())
}

/// Deduplicates (resolvers repeat addresses per socket type) and keeps the
/// addresses a trace can use in the requested family, in resolver order.
fn select(
    host: &str,
    addrs: impl IntoIterator<Item = IpAddr>,
    family: FamilyPreference,
) -> Result<Resolved, ResolveError> {
    let mut seen = Vec::new();
    let mut refused = None;
    for ip in addrs {
        let ip = ip.to_canonical();
        if let Some(class) = AddressClass::unusable(ip) {
            refused.get_or_insert((ip, class));
        } else if !seen.contains(&ip) {
            seen.push(ip);
        }
    }
    if let (true, Some((address, class))) = (seen.is_empty(), refused) {
        return Err(ResolveError::Unusable {
            host: host.to_owned(),
            address,
            class,
        });
    }
    if seen.is_empty() {
        return Err(ResolveError::NotFound {
            host: host.to_owned(),
            detail: "no usable address".into(),
        });
    }
    let all: Vec<IpAddr> = seen.into_iter().filter(|ip| family.accepts(ip)).collect();
    match all.first() {
        Some(&addr) => Ok(Resolved {
            addr,
            all,
            hostname: host.to_owned(),
        }),
        None => Err(ResolveError::NoAddressInFamily {
            host: host.to_owned(),
            family,
        }),
    }
}

/// Turns a user-supplied target into the address to trace.
///
/// Literals never touch DNS. Names are validated, then resolved (A/AAAA via
/// the system resolver, so `/etc/hosts` and nsswitch apply) within `timeout`.
pub async fn resolve_target(
    host: &str,
    family: FamilyPreference,
    timeout: Duration,
) -> Result<Resolved, ResolveError> {
    if let Some(ip) = parse_literal(host)? {
        return select(&ip.to_string(), [ip], family);
    }
    validate_host(host)?;
    let name = host.strip_suffix('.').unwrap_or(host);
    let lookup = tokio::net::lookup_host((host, 0));
    match tokio::time::timeout(timeout, lookup).await {
        Err(_) => Err(ResolveError::Timeout {
            host: name.to_owned(),
            after: timeout,
        }),
        Ok(Err(e)) => Err(ResolveError::NotFound {
            host: name.to_owned(),
            detail: e.to_string(),
        }),
        Ok(Ok(addrs)) => select(name, addrs.map(|sa| sa.ip()), family),
    }
}

mod reverse;

pub use reverse::ReverseDns;
#[cfg(any(test, feature = "internals"))]
pub use reverse::ReverseDnsConfig;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_table() {
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let long_name = [&*long_label, &*long_label, &*long_label, &"b".repeat(61)].join(".");
        assert_eq!(long_name.len(), 253);
        let too_long_name = format!("{long_name}c");
        let good = [
            "localhost",
            "example.com",
            "example.com.",
            "a.b-c.d",
            "EXAMPLE.Com",
            "xn--bcher-kva.example",
            "1.example",
            "3com.com",
            "a",
            "host-1.lab.example",
            long_label.as_str(),
            long_name.as_str(),
        ];
        for host in good {
            assert_eq!(validate_host(host), Ok(()), "{host:?} should be valid");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty host"),
            (".", "empty label"),
            ("a..b", "empty label"),
            (".example.com", "empty label"),
            ("example.com..", "empty label"),
            ("exa mple.com", "whitespace"),
            (" example.com", "whitespace"),
            ("example.com\n", "control"),
            ("exa\0mple", "control"),
            ("http://example.com", "':'"),
            ("example.com/24", "'/'"),
            ("example.com%eth0", "'%'"),
            ("example.com:80", "':'"),
            ("under_score.example", "'_'"),
            ("bücher.example", "non-ASCII"),
            ("-lead.example", "'-'"),
            ("trail-.example", "'-'"),
            ("a.-", "'-'"),
            ("ex*ample.com", "not allowed"),
            ("example.com;rm", "not allowed"),
            (too_long_label.as_str(), "63"),
            (too_long_name.as_str(), "253"),
            ("127.1", "numeric"),
            ("1.2.3", "numeric"),
            ("2130706433", "numeric"),
            ("0x7f.1", "numeric"),
            ("0x7f000001", "numeric"),
            ("1.2.3.4.5", "numeric"),
            ("256.1.1", "numeric"),
            ("example.123", "numeric"),
        ];
        for (host, why) in bad {
            let err = validate_host(host).expect_err(host);
            assert_eq!(err.code(), ErrorCode::InvalidRequest);
            let msg = err.to_string();
            assert!(
                msg.contains(why),
                "{host:?}: {msg:?} should mention {why:?}"
            );
        }
    }

    #[test]
    fn long_inputs_are_not_echoed_in_full() {
        let host = "x".repeat(10_000);
        let msg = validate_host(&host).unwrap_err().to_string();
        assert!(msg.len() < 300, "{}", msg.len());
    }

    #[test]
    fn address_classes_no_trace_can_reach_are_refused_by_name() {
        for (host, words) in [
            // MCAST-TEST-NET (RFC 6676): a documentation multicast address.
            ("233.252.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("[fe80::1]", "link-local"),
            ("::ffff:233.252.0.1", "multicast"),
        ] {
            let err = parse_literal(host).expect_err(host);
            assert_eq!(err.code(), ErrorCode::InvalidRequest, "{host}");
            assert!(err.to_string().contains(words), "{host}: {err}");
        }
        assert_eq!(
            parse_literal("::ffff:198.18.0.1"),
            Ok(Some(IpAddr::from([198, 18, 0, 1]))),
            "IPv4-mapped is IPv4"
        );
        let named = select(
            "mcast.lab",
            [IpAddr::from([233, 252, 0, 251])],
            FamilyPreference::Any,
        )
        .unwrap_err();
        assert_eq!(named.code(), ErrorCode::InvalidRequest);
        assert!(named.to_string().contains("multicast"), "{named}");
        let mixed = select(
            "mixed.lab",
            [
                IpAddr::from([233, 252, 0, 251]),
                IpAddr::from([198, 18, 0, 7]),
            ],
            FamilyPreference::Any,
        )
        .unwrap();
        assert_eq!(mixed.addr, IpAddr::from([198, 18, 0, 7]));
    }

    #[test]
    fn literals() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_literal("198.18.0.1"), Ok(Some(v4)));
        assert_eq!(parse_literal("2001:db8::1"), Ok(Some(v6)));
        assert_eq!(parse_literal("[2001:db8::1]"), Ok(Some(v6)));
        assert_eq!(
            parse_literal("[::ffff:198.18.0.1]")
                .unwrap()
                .unwrap()
                .to_string(),
            "198.18.0.1",
            "an IPv4-mapped address is traced as IPv4"
        );
        assert_eq!(parse_literal("example.com"), Ok(None));
        assert_eq!(parse_literal("127.1"), Ok(None), "left to validate_host");
        for (host, why) in [
            ("fe80::1%eth0", "zone"),
            ("[fe80::1%eth0]", "zone"),
            ("[fe80::1%25eth0]", "zone"),
            ("[2001:db8::1", "unbalanced"),
            ("[198.18.0.1]", "IPv6"),
            ("[]", "IPv6"),
            ("[example.com]", "IPv6"),
            ("2001:db8::1::2", "IPv6"),
            ("2001:db8::1]", "IPv6"),
            ("198.18.0.1:80", "IPv6"),
        ] {
            let err = parse_literal(host).expect_err(host);
            assert!(err.to_string().contains(why), "{host:?}: {err}");
            assert_eq!(err.code(), ErrorCode::InvalidRequest);
        }
    }

    #[test]
    fn selection_by_family() {
        let v4a: IpAddr = "198.18.0.1".parse().unwrap();
        let v4b: IpAddr = "198.18.0.2".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let answers = [v6, v4a, v6, v4b, v4a];

        let any = select("h", answers, FamilyPreference::Any).unwrap();
        assert_eq!((any.addr, any.all.clone()), (v6, vec![v6, v4a, v4b]));
        assert_eq!(any.hostname, "h");
        let four = select("h", answers, FamilyPreference::V4).unwrap();
        assert_eq!((four.addr, four.all), (v4a, vec![v4a, v4b]));
        let six = select("h", answers, FamilyPreference::V6).unwrap();
        assert_eq!((six.addr, six.all), (v6, vec![v6]));

        let err = select("h", [v4a], FamilyPreference::V6).unwrap_err();
        assert_eq!(err.to_string(), "h has no IPv6 address");
        assert_eq!(err.code(), ErrorCode::Dns);
        // A sinkholed name: the resolver's answer is no destination.
        let err = select("h", ["0.0.0.0".parse().unwrap()], FamilyPreference::Any).unwrap_err();
        assert!(matches!(err, ResolveError::Unusable { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
    }

    /// Both are used from tasks of a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(rdns: ReverseDns, ip: IpAddr) -> impl std::future::Future + Send {
        async move {
            rdns.lookup(ip).await;
            resolve_target("h", FamilyPreference::Any, Duration::ZERO).await
        }
    }

    #[test]
    fn error_codes() {
        let t = ResolveError::Timeout {
            host: "h".into(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(t.code(), ErrorCode::Timeout);
        assert_eq!(t.to_string(), "resolving h timed out after 1500 ms");
        let n = ResolveError::NotFound {
            host: "h".into(),
            detail: "x".into(),
        };
        assert_eq!(n.code(), ErrorCode::Dns);
    }

    #[test]
    fn family_spellings() {
        for (s, f) in [
            ("any", FamilyPreference::Any),
            ("V4", FamilyPreference::V4),
            ("ipv4", FamilyPreference::V4),
            ("4", FamilyPreference::V4),
            ("inet6", FamilyPreference::V6),
            ("6", FamilyPreference::V6),
        ] {
            assert_eq!(s.parse::<FamilyPreference>(), Ok(f), "{s}");
        }
        assert!("5".parse::<FamilyPreference>().is_err());
        assert_eq!(
            serde_json::to_string(&FamilyPreference::V6).unwrap(),
            "\"v6\""
        );
    }
}
