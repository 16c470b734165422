//! What a trace is asked to do, and the one set of defaults and limits every
//! entry point validates through: the CLI (its clap ranges and defaults are
//! built from these constants), the HTTP API, and the config file's targets.
//! A unit test checks the documented tables (docs/CLI.md, SERVICE.md,
//! HTTP_API.md and the README) against them.

use std::fmt;
use std::time::Duration;

use crate::error::UnknownName;
use crate::probe::{Protocol, Ttl, sack};
use crate::resolve::FamilyPreference;
use crate::route::Egress;

/// The allowed range of a request parameter and its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds<T> {
    pub min: T,
    pub default: T,
    pub max: T,
}

/// Highest TTL probed (any TTL a packet can carry, as the Go client allows).
pub const MAX_TTL: Bounds<u8> = Bounds {
    min: 1,
    default: 30,
    max: 255,
};
/// Independent runs per trace (`traceroute.runs[]`).
pub const QUERIES: Bounds<u8> = Bounds {
    min: 1,
    default: 3,
    max: 10,
};
/// The CLI's `-c/--report-cycles`: runs of one trace, as mtr's cycles
/// (more than the API's `queries` allow; each is a full run).
pub const CYCLES: Bounds<u8> = Bounds {
    min: 1,
    default: 10,
    max: 100,
};
/// Probes scheduled or in flight at once (traceroute's `-N`).
pub const WINDOW: Bounds<u16> = Bounds {
    min: 1,
    default: 16,
    max: 1024,
};
/// How long one probe waits for its answer.
pub const TIMEOUT: Bounds<Duration> = Bounds {
    min: Duration::from_millis(1),
    default: Duration::from_secs(1),
    max: Duration::from_secs(30),
};
/// End-to-end probes beside the trace (API only).
pub const E2E_QUERIES: Bounds<u8> = Bounds {
    min: 0,
    default: 0,
    max: 100,
};
/// Flows traced at once (`paths`): runs that differ only in the flow
/// identifier, so ECMP routers spread them over their branches.
pub const PATHS: Bounds<u16> = Bounds {
    min: 1,
    default: 1,
    max: 64,
};
/// Most flows one MDA trace may use.
pub const MDA_MAX_FLOWS: usize = 256;
/// The safety rail: probes per second across all traces.
pub const PROBES_PER_SECOND: Bounds<u32> = Bounds {
    min: 1,
    default: 2000,
    max: 100_000,
};
/// The protocol when none is named.
pub const DEFAULT_PROTOCOL: Protocol = Protocol::Udp;
/// Shortest gap between two end-to-end probes.
pub const E2E_MIN_SPACING: Duration = Duration::from_millis(1);
/// How long a name may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How TCP probes are sent (`tcp_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcpMethod {
    /// Bare SYNs of one flow (Paris).
    #[default]
    Syn,
    /// One-byte segments inside an established connection (one handshake
    /// first), which stateful firewalls pass as established traffic.
    Sack,
    /// [`TcpMethod::Sack`], or SYNs when the destination refuses the
    /// connection or does not allow SACK.
    PreferSack,
    /// SYNs the kernel sends with connect(), a socket per probe with its
    /// TTL: no raw socket, no capture, no privilege (see `trace::syn_socket`).
    SynSocket,
}

impl TcpMethod {
    pub const ALL: [TcpMethod; 4] = [
        TcpMethod::Syn,
        TcpMethod::Sack,
        TcpMethod::PreferSack,
        TcpMethod::SynSocket,
    ];

    /// Its name in every interface (`tcp_method`, `--tcp-method`).
    pub const fn as_str(self) -> &'static str {
        match self {
            TcpMethod::Syn => "syn",
            TcpMethod::Sack => "sack",
            TcpMethod::PreferSack => "prefer_sack",
            TcpMethod::SynSocket => "syn_socket",
        }
    }

    /// One line on what it does, for help texts.
    pub const fn help(self) -> &'static str {
        match self {
            TcpMethod::Syn => "Bare SYNs",
            TcpMethod::Sack => "One handshake, then segments inside the connection (needs SACK)",
            TcpMethod::PreferSack => "sack, or SYNs when the destination refuses or has no SACK",
            TcpMethod::SynSocket => {
                "SYNs by connect(), a socket per probe with its TTL: no privilege needed (one probe at a time; user-space RTTs)"
            }
        }
    }

    /// Whether a TCP request with this method probes by connect().
    pub fn by_connect(self) -> bool {
        self == TcpMethod::SynSocket
    }
}

/// A `tcp_method` value, any case.
impl std::str::FromStr for TcpMethod {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<TcpMethod, UnknownName> {
        TcpMethod::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                UnknownName::new("tcp_method", text, "syn, sack, prefer_sack or syn_socket")
            })
    }
}

/// Why a request could not be built from what a caller asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    /// A source address or interface that can never work (see
    /// [`Egress::check`]), or a source of the other family.
    #[error("{0}")]
    Egress(String),
    /// Things asked for that exclude each other, or cannot work together.
    #[error("{0}")]
    Conflict(String),
}

/// A value outside its [`Bounds`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be {range}, got {value}")]
pub struct OutOfRange {
    pub name: String,
    pub range: String,
    pub value: String,
}

impl<T: PartialOrd + Copy + fmt::Debug> Bounds<T> {
    /// `value` if it is within the bounds; else an error naming `name` (the
    /// parameter as the caller's interface spells it).
    pub fn check(&self, name: &str, value: T) -> Result<T, OutOfRange> {
        if self.min <= value && value <= self.max {
            Ok(value)
        } else {
            Err(OutOfRange {
                name: name.to_string(),
                range: format!("{:?}..={:?}", self.min, self.max),
                value: format!("{value:?}"),
            })
        }
    }
}

/// What a caller asks for, as plain data: the CLI's flags, the API's query
/// parameters and a config target all fill one, and [`build`](Self::build)
/// checks everything, once, against the one set of bounds and rules.
#[derive(Clone, Debug)]
pub struct TraceParams {
    pub host: String,
    pub protocol: Protocol,
    /// The protocol's default when `None`.
    pub port: Option<u16>,
    pub first_ttl: u8,
    pub max_ttl: u8,
    /// Runs; up to [`QUERIES`]`.max`, or [`CYCLES`]`.max` when `as_cycles`.
    pub queries: u8,
    /// `queries` are mtr's report cycles (the CLI's `-c`).
    pub as_cycles: bool,
    pub timeout: Duration,
    pub e2e_queries: u8,
    /// The mode's switches, made one [`Mode`] by [`Mode::from_switches`].
    pub paths: u16,
    pub multipath: Option<Multipath>,
    pub pmtu: bool,
    pub flow_id: Option<u16>,
    pub tcp_method: TcpMethod,
    pub window: Option<u16>,
    pub wait_factors: Option<(f64, f64)>,
    pub family: FamilyPreference,
    pub egress: Egress,
    pub reverse_dns: bool,
}

impl TraceParams {
    /// Every default.
    pub fn new(host: impl Into<String>, protocol: Protocol) -> TraceParams {
        TraceParams {
            host: host.into(),
            protocol,
            port: None,
            first_ttl: 1,
            max_ttl: MAX_TTL.default,
            queries: QUERIES.default,
            as_cycles: false,
            timeout: TIMEOUT.default,
            e2e_queries: E2E_QUERIES.default,
            paths: PATHS.default,
            multipath: None,
            pmtu: false,
            flow_id: None,
            tcp_method: TcpMethod::Syn,
            window: None,
            wait_factors: None,
            family: FamilyPreference::Any,
            egress: Egress::default(),
            reverse_dns: false,
        }
    }

    /// The request, or the first thing wrong with what was asked.
    pub fn build(&self) -> Result<TraceRequest, BadRequest> {
        let mut r =
            TraceRequest::new(self.host.clone(), self.protocol).with_max_ttl(self.max_ttl)?;
        r = if self.as_cycles {
            r.with_cycles(self.queries)?
        } else {
            r.with_queries(self.queries)?
        };
        r = r
            .with_timeout(self.timeout)?
            .with_e2e_queries(self.e2e_queries)?
            .with_first_ttl(self.first_ttl)?;
        if let Some(window) = self.window {
            r = r.with_window(window)?;
        }
        r.mode = Mode::from_switches(self.paths, self.multipath, self.pmtu)?;
        r.port = self.port;
        r.flow_id = self.flow_id;
        r.tcp_method = self.tcp_method;
        r.wait_factors = self.wait_factors;
        r.reverse_dns = self.reverse_dns;
        if let Some(conflict) = r.pmtu_conflict() {
            return Err(BadRequest::Conflict(conflict.into()));
        }
        if let Some(conflict) = r.flow_conflict() {
            return Err(BadRequest::Conflict(conflict));
        }
        if let Some(conflict) = r.sack_conflict() {
            return Err(BadRequest::Conflict(conflict));
        }
        // The family before the egress: a pinned source must agree with it.
        r.family = self.family;
        r.with_egress(self.egress.clone())
    }
}

/// What to trace and how: made by [`TraceParams::build`] (or, in tests,
/// [`TraceRequest::new`] and the checked `with_*` setters).
#[derive(Clone, Debug)]
pub struct TraceRequest {
    /// Host name or literal address.
    pub(crate) host: String,
    pub(crate) protocol: Protocol,
    /// Destination port (TCP/UDP); the protocol's default when `None`.
    pub(crate) port: Option<u16>,
    /// Lowest TTL probed: 1 for a trace; `max_ttl` for end-to-end probes that
    /// should only reach the destination.
    pub(crate) first_ttl: Ttl,
    pub(crate) max_ttl: Ttl,
    /// Independent runs (one probe per hop each): `traceroute.runs[]`.
    pub(crate) queries: u8,
    /// End-to-end probes after the trace, each a sample of `e2e_probe`.
    pub e2e_queries: u8,
    /// Flows at once, MDA or path MTU discovery.
    pub(crate) mode: Mode,
    /// The first flow's identifier (source port; ICMP: echo identifier)
    /// instead of a random one; further flows take the next ones, so a
    /// multi-flow trace is reproducible.
    pub(crate) flow_id: Option<u16>,
    /// How TCP probes are sent.
    pub(crate) tcp_method: TcpMethod,
    /// How long one probe may wait for its answer.
    pub(crate) timeout: Duration,
    /// Probes at once per flow (traceroute's `-N`); the policy's when `None`.
    pub(crate) window: Option<u16>,
    /// traceroute's HERE and NEAR factors of `-w MAX,HERE,NEAR`; the
    /// policy's when `None`.
    pub(crate) wait_factors: Option<(f64, f64)>,
    pub(crate) family: FamilyPreference,
    /// Source address and interface pinned by the caller (`-s`, `-i`);
    /// by default the kernel's route chooses both.
    pub(crate) egress: Egress,
    pub(crate) reverse_dns: bool,
}

/// What callers outside the crate may read of a request (it is made by
/// [`TraceParams::build`] and changed only through the checked setters).
impl TraceRequest {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn tcp_method(&self) -> TcpMethod {
        self.tcp_method
    }

    pub fn reverse_dns(&self) -> bool {
        self.reverse_dns
    }

    /// The same request with TCP probes sent by connect() (the CLI's
    /// fallback without privileges).
    pub fn by_connect(mut self) -> Self {
        self.tcp_method = TcpMethod::SynSocket;
        self
    }
}

impl TraceRequest {
    /// A request with every default.
    pub fn new(host: impl Into<String>, protocol: Protocol) -> Self {
        Self {
            host: host.into(),
            protocol,
            port: None,
            first_ttl: Ttl::MIN,
            max_ttl: Ttl::new(MAX_TTL.default).expect("nonzero default"),
            queries: QUERIES.default,
            e2e_queries: E2E_QUERIES.default,
            mode: Mode::ONE_FLOW,
            flow_id: None,
            tcp_method: TcpMethod::Syn,
            timeout: TIMEOUT.default,
            window: None,
            wait_factors: None,
            family: FamilyPreference::Any,
            egress: Egress::default(),
            reverse_dns: false,
        }
    }

    pub fn with_max_ttl(mut self, max_ttl: u8) -> Result<Self, OutOfRange> {
        let checked = MAX_TTL.check("max_ttl", max_ttl)?;
        self.max_ttl = Ttl::new(checked).expect("MAX_TTL.min is 1");
        Ok(self)
    }

    pub fn with_queries(mut self, queries: u8) -> Result<Self, OutOfRange> {
        self.queries = QUERIES.check("queries", queries)?;
        Ok(self)
    }

    /// Runs as mtr's cycles (`-c`): up to [`CYCLES`]`.max`.
    pub fn with_cycles(mut self, cycles: u8) -> Result<Self, OutOfRange> {
        self.queries = CYCLES.check("cycles", cycles)?;
        Ok(self)
    }

    /// The lowest TTL probed (traceroute's `-f`), at most `max_ttl`.
    pub fn with_first_ttl(mut self, first: u8) -> Result<Self, OutOfRange> {
        let max = self.max_ttl.get();
        self.first_ttl = Ttl::new(first)
            .filter(|t| t.get() <= max)
            .ok_or_else(|| OutOfRange {
                name: "first_ttl".into(),
                range: format!("1..={max} (max_ttl)"),
                value: first.to_string(),
            })?;
        Ok(self)
    }

    pub fn with_window(mut self, window: u16) -> Result<Self, OutOfRange> {
        self.window = Some(WINDOW.check("window", window)?);
        Ok(self)
    }

    pub fn with_e2e_queries(mut self, e2e_queries: u8) -> Result<Self, OutOfRange> {
        self.e2e_queries = E2E_QUERIES.check("e2e_queries", e2e_queries)?;
        Ok(self)
    }

    pub fn with_paths(mut self, paths: u16) -> Result<Self, OutOfRange> {
        self.mode = Mode::Flows(PATHS.check("paths", paths)?);
        Ok(self)
    }

    /// Pins the source address and/or interface (`-s`, `-i`). A pinned
    /// source also decides which family a name resolves to: set `family`
    /// first; the other family is refused.
    pub fn with_egress(mut self, egress: Egress) -> Result<Self, BadRequest> {
        egress.check().map_err(BadRequest::Egress)?;
        if let Some(source) = egress.source {
            if let Ok(Some(destination)) = crate::resolve::parse_literal(&self.host)
                && destination.is_ipv4() != source.is_ipv4()
            {
                return Err(BadRequest::Egress(format!(
                    "source address {source} and destination {destination} are not of the same IP version"
                )));
            }
            let wanted = if source.is_ipv4() {
                FamilyPreference::V4
            } else {
                FamilyPreference::V6
            };
            match self.family {
                FamilyPreference::Any => self.family = wanted,
                family if family == wanted => {}
                _ => {
                    return Err(BadRequest::Egress(format!(
                        "source address {source} is of the other IP version than the family asked for"
                    )));
                }
            }
        }
        self.egress = egress;
        Ok(self)
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, OutOfRange> {
        self.timeout = TIMEOUT.check("timeout", timeout)?;
        Ok(self)
    }

    /// Why the pinned flow ids cannot be used as asked, if they cannot: a
    /// first id of 1..=65535 (0 would pin nothing), and the ids of every flow
    /// the trace may use (`paths`, or up to [`MDA_MAX_FLOWS`] for MDA) must
    /// not wrap past 65535 (two identical requests would then pin different
    /// flows).
    pub fn flow_conflict(&self) -> Option<String> {
        let first = self.flow_id?;
        if first == 0 {
            return Some("flow_id must be 1..=65535 (0 would pin no flow)".into());
        }
        let flows = match self.mode {
            Mode::Mda(_) => MDA_MAX_FLOWS,
            mode => usize::from(mode.flows()),
        };
        let last = usize::from(first) + flows - 1;
        (last > usize::from(u16::MAX)).then(|| {
            format!(
                "flow_id {first} with {flows} flows would wrap past 65535: at most {} here",
                usize::from(u16::MAX) + 1 - flows
            )
        })
    }

    /// Why probes inside a connection cannot be told apart as asked, if
    /// they cannot: their sequence numbers hold 16 attempts per TTL
    /// (mtr-style cycles go higher).
    pub fn sack_conflict(&self) -> Option<String> {
        let inside = matches!(self.tcp_method, TcpMethod::Sack | TcpMethod::PreferSack);
        (self.protocol == Protocol::Tcp && inside && self.queries > sack::MAX_ATTEMPTS).then(|| {
            format!(
                "tcp_method {} tells at most {} probes per TTL apart inside one connection, {} asked: ask for fewer, or use tcp_method syn",
                self.tcp_method.as_str(),
                sack::MAX_ATTEMPTS,
                self.queries
            )
        })
    }

    /// Why path MTU discovery cannot run as asked, if it cannot: it pads
    /// UDP or ICMP probes (one flow, which [`Mode`] ensures).
    pub fn pmtu_conflict(&self) -> Option<&'static str> {
        (self.mode == Mode::Pmtu && self.protocol == Protocol::Tcp).then_some(
            "path MTU discovery needs UDP or ICMP probes (TCP SYN probes are not padded)",
        )
    }
}

/// What kind of trace. The kinds exclude each other, so a request holds
/// one and conflicting asks cannot be written down.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// This many flows at once, each `queries` runs (1: one Paris trace;
    /// see [`PATHS`]).
    Flows(u16),
    /// Multipath discovery: one run per flow, as many flows as the stopping
    /// rule asks for, up to [`MDA_MAX_FLOWS`].
    Mda(Multipath),
    /// Path MTU per hop: one flow, probes padded to the interface MTU and
    /// smaller again wherever a router says they do not fit (UDP, ICMP).
    Pmtu,
}

impl Mode {
    pub const ONE_FLOW: Mode = Mode::Flows(1);

    /// The mode that the switches every interface has ask for (`paths`,
    /// `multipath`, `pmtu`: the CLI's flags, the API's parameters, a config
    /// target's keys), or why they cannot go together. One place for the
    /// rules, so the three interfaces cannot drift apart.
    pub fn from_switches(
        paths: u16,
        multipath: Option<Multipath>,
        pmtu: bool,
    ) -> Result<Mode, BadRequest> {
        let paths = PATHS.check("paths", paths)?;
        match (paths, multipath, pmtu) {
            (1, None, true) => Ok(Mode::Pmtu),
            (_, _, true) => Err(BadRequest::Conflict(
                "path MTU discovery traces one flow: it excludes paths and multipath".into(),
            )),
            (1, Some(mda), false) => Ok(Mode::Mda(mda)),
            (_, Some(_), false) => Err(BadRequest::Conflict(
                "paths and multipath exclude each other (MDA chooses the flows)".into(),
            )),
            (paths, None, false) => Ok(Mode::Flows(paths)),
        }
    }

    /// Flows it starts with: those asked for, or one.
    pub fn flows(self) -> u16 {
        match self {
            Mode::Flows(n) => n.max(1),
            Mode::Mda(_) | Mode::Pmtu => 1,
        }
    }

    /// Its flows may take different branches.
    pub fn branches(self) -> bool {
        matches!(self, Mode::Mda(_)) || self.flows() > 1
    }
}

/// An MDA trace: how sure it must be, and by which rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Multipath {
    pub confidence: Confidence,
    pub rule: MdaRule,
}

impl Multipath {
    /// 95 %, the lite rule.
    pub const DEFAULT: Multipath = Multipath {
        confidence: Confidence::P95,
        rule: MdaRule::Lite,
    };
}

/// How many flows a router needs beyond it before its next hops count as
/// known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MdaRule {
    /// MDA-Lite (Vermeulen et al., IMC 2018): where the routers at a TTL
    /// look alike (each with as many next hops, no next hop shared by two
    /// of them while one of them splits), the stopping rule holds for the
    /// TTL as a whole and its flows are shared out among its routers;
    /// wherever they do not, each router gets the full rule. Far fewer
    /// probes where paths converge (8 addresses before 2 need 11 flows
    /// beyond them in all, 2 each, not 6 each), which is what rate-limited
    /// routers pay for.
    #[default]
    Lite,
    /// The full MDA: every router gets the stopping rule for itself.
    Full,
}

impl MdaRule {
    pub fn as_str(self) -> &'static str {
        match self {
            MdaRule::Lite => "lite",
            MdaRule::Full => "full",
        }
    }
}

impl std::str::FromStr for MdaRule {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<MdaRule, UnknownName> {
        match text.to_ascii_lowercase().as_str() {
            "lite" => Ok(MdaRule::Lite),
            "full" => Ok(MdaRule::Full),
            _ => Err(UnknownName::new("mda_rule", text, "lite or full")),
        }
    }
}

/// Confidence of an MDA trace: the chance that a router with one more next
/// hop than found would have shown it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Confidence(f64);

impl Confidence {
    pub const P95: Confidence = Confidence(0.95);
    pub const P99: Confidence = Confidence(0.99);

    /// 95 or 99 (percent), the two levels offered.
    pub fn from_percent(percent: u8) -> Option<Confidence> {
        match percent {
            95 => Some(Self::P95),
            99 => Some(Self::P99),
            _ => None,
        }
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::budget::Rate;

    /// What every interface fills is checked in one place: bounds, the
    /// mode, path MTU's protocol, flow pins, the egress; and what passes
    /// lands in the request as asked.
    #[test]
    fn params_build_the_request_or_say_what_is_wrong() {
        let ok = TraceParams {
            port: Some(8080),
            max_ttl: 12,
            queries: 16,
            as_cycles: true,
            paths: 4,
            flow_id: Some(40000),
            tcp_method: TcpMethod::Sack,
            wait_factors: Some((3.0, 10.0)),
            ..TraceParams::new("198.18.0.9", Protocol::Tcp)
        }
        .build()
        .unwrap();
        assert_eq!(
            (ok.port, ok.max_ttl.get(), ok.queries, ok.mode, ok.flow_id),
            (Some(8080), 12, 16, Mode::Flows(4), Some(40000))
        );
        assert_eq!(
            (ok.tcp_method, ok.wait_factors),
            (TcpMethod::Sack, Some((3.0, 10.0)))
        );
        let base = TraceParams::new("198.18.0.9", Protocol::Udp);
        for (params, why) in [
            (
                TraceParams {
                    queries: 40,
                    ..base.clone()
                },
                "queries",
            ),
            (
                TraceParams {
                    first_ttl: 40,
                    max_ttl: 30,
                    ..base.clone()
                },
                "first_ttl",
            ),
            (
                TraceParams {
                    protocol: Protocol::Tcp,
                    pmtu: true,
                    ..base.clone()
                },
                "UDP or ICMP",
            ),
            (
                TraceParams {
                    paths: 2,
                    pmtu: true,
                    ..base.clone()
                },
                "one flow",
            ),
            (
                TraceParams {
                    flow_id: Some(65535),
                    paths: 3,
                    ..base.clone()
                },
                "wrap past 65535",
            ),
            (
                TraceParams {
                    family: FamilyPreference::V6,
                    egress: Egress {
                        source: Some("198.18.0.1".parse().unwrap()),
                        interface: None,
                    },
                    ..base.clone()
                },
                "other IP version",
            ),
        ] {
            let e = params.build().unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    /// The three switches every interface has make one mode, or say why
    /// they cannot: path MTU discovery is one flow, MDA chooses its flows.
    #[test]
    fn the_switches_make_one_mode_or_say_why_not() {
        let mda = Some(Multipath::DEFAULT);
        assert_eq!(Mode::from_switches(1, None, false), Ok(Mode::ONE_FLOW));
        assert_eq!(Mode::from_switches(8, None, false), Ok(Mode::Flows(8)));
        assert_eq!(
            Mode::from_switches(1, mda, false),
            Ok(Mode::Mda(Multipath::DEFAULT))
        );
        assert_eq!(Mode::from_switches(1, None, true), Ok(Mode::Pmtu));
        for (paths, multipath, pmtu, why) in [
            (2, mda, false, "paths and multipath exclude each other"),
            (2, None, true, "excludes paths and multipath"),
            (1, mda, true, "excludes paths and multipath"),
        ] {
            let e = Mode::from_switches(paths, multipath, pmtu).unwrap_err();
            assert!(
                e.to_string().contains(why),
                "{paths} {multipath:?} {pmtu}: {e}"
            );
        }
        assert!(matches!(
            Mode::from_switches(PATHS.max + 1, None, false),
            Err(BadRequest::OutOfRange(_))
        ));
        // What the modes mean to the rest of the trace.
        assert!(!Mode::ONE_FLOW.branches() && !Mode::Pmtu.branches());
        assert!(Mode::Flows(2).branches() && Mode::Mda(Multipath::DEFAULT).branches());
        assert_eq!(Mode::Flows(0).flows(), 1);
    }

    /// One parser per enum, for the CLI, the API and the config: every name
    /// it prints reads back, in any case, and nothing else does.
    #[test]
    fn the_request_enums_read_their_own_names_and_nothing_else() {
        for method in TcpMethod::ALL {
            assert_eq!(method.as_str().parse(), Ok(method));
            assert_eq!(method.as_str().to_uppercase().parse(), Ok(method));
        }
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
            assert_eq!(protocol.as_str().parse(), Ok(protocol));
            assert_eq!(protocol.as_str().to_lowercase().parse(), Ok(protocol));
        }
        for rule in [MdaRule::Lite, MdaRule::Full] {
            assert_eq!(rule.as_str().parse(), Ok(rule));
        }
        let e = "sctp".parse::<Protocol>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown protocol "sctp" (TCP, UDP or ICMP)"#
        );
        let e = "syn ".parse::<TcpMethod>().unwrap_err();
        assert!(
            e.to_string()
                .contains("syn, sack, prefer_sack or syn_socket"),
            "{e}"
        );
        // Whatever a client sends, the message stays short.
        let e = "x".repeat(10_000).parse::<MdaRule>().unwrap_err();
        assert!(e.to_string().len() < 120, "{e}");
    }

    #[test]
    fn a_pinned_source_decides_the_family() {
        let from = |ip: &str| Egress {
            source: Some(ip.parse().unwrap()),
            interface: None,
        };
        let r = TraceRequest::new("h.example", DEFAULT_PROTOCOL)
            .with_egress(from("198.18.2.1"))
            .unwrap();
        assert_eq!(r.family, FamilyPreference::V4);
        let mut v6 = TraceRequest::new("h.example", DEFAULT_PROTOCOL);
        v6.family = FamilyPreference::V6;
        assert_eq!(
            v6.clone().with_egress(from("2001:db8::1")).unwrap().family,
            FamilyPreference::V6
        );
        let err = v6.with_egress(from("198.18.2.1")).unwrap_err();
        assert!(err.to_string().contains("other IP version"), "{err}");
        let err = TraceRequest::new("198.18.5.2", DEFAULT_PROTOCOL)
            .with_egress(from("2001:db8::1"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "source address 2001:db8::1 and destination 198.18.5.2 are not of the same IP version"
        );
        // Only the interface: the family is left alone.
        let r = TraceRequest::new("h.example", DEFAULT_PROTOCOL)
            .with_egress(Egress {
                source: None,
                interface: Some("wan1".into()),
            })
            .unwrap();
        assert_eq!(r.family, FamilyPreference::Any);
    }

    #[test]
    fn pinned_flows_never_wrap_and_zero_pins_nothing() {
        let pinned = |id: u16, paths: u16| {
            let mut r = TraceRequest::new("198.18.5.2", DEFAULT_PROTOCOL)
                .with_paths(paths)
                .unwrap();
            r.flow_id = Some(id);
            r.flow_conflict()
        };
        assert_eq!(pinned(1, 64), None);
        assert_eq!(pinned(65535, 1), None);
        assert_eq!(pinned(65534, 2), None);
        assert!(pinned(0, 1).unwrap().contains("1..=65535"));
        assert_eq!(
            pinned(65535, 3).unwrap(),
            "flow_id 65535 with 3 flows would wrap past 65535: at most 65533 here"
        );
        let mut mda = TraceRequest::new("198.18.5.2", DEFAULT_PROTOCOL);
        mda.mode = Mode::Mda(Multipath::DEFAULT);
        mda.flow_id = Some(65_300);
        assert!(mda.flow_conflict().unwrap().contains("256 flows"));
        mda.flow_id = Some(65_280);
        assert_eq!(mda.flow_conflict(), None);
        mda.flow_id = None;
        assert_eq!(mda.flow_conflict(), None);
    }

    #[test]
    fn probes_inside_a_connection_are_not_asked_for_more_than_their_sequence_numbers_tell_apart() {
        let cycles = |n: u8, method: TcpMethod| {
            TraceParams {
                queries: n,
                as_cycles: true,
                tcp_method: method,
                ..TraceParams::new("198.18.5.2", Protocol::Tcp)
            }
            .build()
        };
        assert!(cycles(sack::MAX_ATTEMPTS, TcpMethod::Sack).is_ok());
        for method in [TcpMethod::Sack, TcpMethod::PreferSack] {
            let e = cycles(sack::MAX_ATTEMPTS + 1, method).unwrap_err();
            assert!(
                matches!(&e, BadRequest::Conflict(m) if m.contains("at most 16 probes per TTL")),
                "{e}"
            );
        }
        assert!(cycles(100, TcpMethod::Syn).is_ok());
    }

    #[test]
    fn end_to_end_probes_reach_for_the_destination_spread_over_one_wait() {
        let r = TraceRequest::new("198.18.5.2", DEFAULT_PROTOCOL)
            .with_e2e_queries(100)
            .and_then(|r| r.with_timeout(Duration::from_secs(1)))
            .unwrap();
        let e2e = super::super::prober::Plan::e2e_of(&r);
        assert_eq!(e2e.attempts, 100);
        assert_eq!((e2e.first_ttl, e2e.max_ttl), (r.max_ttl, r.max_ttl));
        assert_eq!(e2e.spacing, Duration::from_millis(10));
        // The caller's bound covers them as it covers the trace.
        let call = super::super::Call {
            deadline: Some(Duration::from_secs(16)),
            ..Default::default()
        };
        assert_eq!(
            call.deadline_of(&e2e, Rate::ROUTER_DEFAULT, 1),
            Duration::from_secs(16)
        );
        assert!(
            super::super::Call::default().deadline_of(&e2e, Rate::ROUTER_DEFAULT, 1)
                > Duration::from_secs(1) * 2 + e2e.spacing * 99
        );
    }

    #[test]
    fn bounds_check_and_name_the_parameter() {
        assert_eq!(MAX_TTL.check("max_ttl", 255), Ok(255));
        let e = MAX_TTL.check("max_ttl", 0).unwrap_err();
        assert_eq!(e.to_string(), "max_ttl must be 1..=255, got 0");
        let e = TIMEOUT
            .check("timeout", Duration::from_secs(31))
            .unwrap_err();
        assert_eq!(e.to_string(), "timeout must be 1ms..=30s, got 31s");
        assert!(QUERIES.check("q", 0).is_err());
        let r = TraceRequest::new("h", DEFAULT_PROTOCOL);
        assert_eq!(
            (r.max_ttl.get(), r.queries, r.timeout),
            (MAX_TTL.default, QUERIES.default, TIMEOUT.default)
        );
        assert!(r.clone().with_max_ttl(0).is_err());
        assert_eq!(r.with_queries(10).map(|r| r.queries), Ok(10));
    }

    /// The docs give the same defaults and limits in three tables (the
    /// CLI's options in docs/CLI.md, the config's targets in
    /// docs/SERVICE.md, the API's parameters in docs/HTTP_API.md), and the
    /// README repeats the most used options: every row found must agree.
    #[test]
    fn the_documented_tables_match_the_limits() {
        let docs = [
            ("README.md", include_str!("../../../README.md")),
            ("docs/CLI.md", include_str!("../../../docs/CLI.md")),
            ("docs/SERVICE.md", include_str!("../../../docs/SERVICE.md")),
            (
                "docs/HTTP_API.md",
                include_str!("../../../docs/HTTP_API.md"),
            ),
        ];
        let ms = |d: Duration| d.as_millis();
        let ns = |d: Duration| {
            // "1 000 000" style, as the table writes nanoseconds.
            let digits = d.as_nanos().to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(' ');
                }
                out.push(c);
            }
            out
        };
        let checks: Vec<(&str, Vec<String>)> = vec![
            (
                "| `-m, --max-ttl N`",
                vec![
                    format!("(1–{})", MAX_TTL.max),
                    format!("| {} |", MAX_TTL.default),
                ],
            ),
            (
                "| `-q, --queries N`",
                vec![
                    format!("1–{})", QUERIES.max),
                    format!("| {} |", QUERIES.default),
                ],
            ),
            (
                "| `--timeout-ms N`",
                vec![
                    format!("({}–{})", ms(TIMEOUT.min), ms(TIMEOUT.max)),
                    format!("| {} |", ms(TIMEOUT.default)),
                ],
            ),
            (
                "| `--pps N`",
                vec![
                    format!("(1–{})", PROBES_PER_SECOND.max),
                    format!("| {} |", PROBES_PER_SECOND.default),
                ],
            ),
            (
                "| `queries` |",
                vec![format!(
                    "| `{}` | runs per trace (1–{})",
                    QUERIES.default, QUERIES.max
                )],
            ),
            (
                "| `max_ttl` | `",
                vec![format!("| `{}` | 1–{} |", MAX_TTL.default, MAX_TTL.max)],
            ),
            (
                "| `timeout` | `",
                vec![format!(
                    "| `\"{:?}\"` | per-hop timeout ({:?}–{:?})",
                    TIMEOUT.default, TIMEOUT.min, TIMEOUT.max
                )],
            ),
            (
                "| `max_ttl` | ",
                vec![format!("| {} | 0–{} |", MAX_TTL.default, MAX_TTL.max)],
            ),
            (
                "| `timeout` | ",
                vec![format!("| 0 or {}–{} |", ns(TIMEOUT.min), ns(TIMEOUT.max))],
            ),
            (
                "| `traceroute_queries` |",
                vec![format!("| {} | 0–{} |", QUERIES.default, QUERIES.max)],
            ),
            (
                "| `e2e_queries` | ",
                vec![format!(
                    "| {} | 0–{} |",
                    E2E_QUERIES.default, E2E_QUERIES.max
                )],
            ),
            (
                "| `e2e_queries` | `",
                vec![format!(
                    "| `{}` | end-to-end probes per run ({}–{})",
                    E2E_QUERIES.default, E2E_QUERIES.min, E2E_QUERIES.max
                )],
            ),
            (
                "| `-c, --report-cycles N`",
                vec![format!("up to {} |", CYCLES.max)],
            ),
            (
                "| `--mda-rule lite\\|full`",
                vec![format!("| {} |", MdaRule::default().as_str())],
            ),
            (
                "| `mda_rule` | ",
                vec![format!(
                    "| {} | `lite`, `full`",
                    MdaRule::default().as_str()
                )],
            ),
            (
                "| `mda_rule` | `",
                vec![format!("| `\"{}\"` |", MdaRule::default().as_str())],
            ),
            (
                "| `-N, --sim-queries N`",
                vec![
                    format!("({}–{})", WINDOW.min, WINDOW.max),
                    format!("| {} |", WINDOW.default),
                ],
            ),
        ];
        for (start, wanted) in checks {
            // Config rows quote the default in backticks; API rows do not:
            // "| `max_ttl` | `" finds the first, "| `max_ttl` | " both, so
            // the API row is the one without the backtick.
            let rows: Vec<(&str, &str)> = docs
                .iter()
                .flat_map(|(file, text)| text.lines().map(move |l| (*file, l)))
                .filter(|(_, l)| {
                    l.starts_with(start)
                        && !(start.ends_with("| ") && l[start.len()..].starts_with('`'))
                })
                .collect();
            assert!(!rows.is_empty(), "no documented row starts {start:?}");
            for (file, line) in rows {
                for w in &wanted {
                    assert!(
                        line.contains(w.as_str()),
                        "{file} row {line:?} should contain {w:?}"
                    );
                }
            }
        }
    }
}
