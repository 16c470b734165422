//! Error codes: the `code` of the API's JSON errors, of failed runs in the
//! metrics and logs, and what the CLI's exit status is derived from. One enum
//! owns each code's name, HTTP status and exit code, so the contract lives in
//! one place (docs/HTTP_API.md lists the same table).

use std::fmt;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Bad host, parameter or HTTP request.
    InvalidRequest,
    /// A valid request for something we do not do (yet).
    NotSupported,
    NotFound,
    MethodNotAllowed,
    UriTooLong,
    HeadersTooLarge,
    /// A well-formed name the resolver could not turn into an address.
    Dns,
    /// No route to the target's network.
    Netunreach,
    /// The route says the host is unreachable.
    Hostunreach,
    Timeout,
    /// Out of trace slots or router budget; try again.
    Busy,
    ShuttingDown,
    /// The agent lacks a privilege.
    Denied,
    /// The client went away or the agent stopped the trace.
    Cancelled,
    Unknown,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidRequest,
        ErrorCode::NotSupported,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::Dns,
        ErrorCode::Netunreach,
        ErrorCode::Hostunreach,
        ErrorCode::Timeout,
        ErrorCode::Busy,
        ErrorCode::ShuttingDown,
        ErrorCode::Denied,
        ErrorCode::Cancelled,
        ErrorCode::Unknown,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::NotSupported => "NOT_SUPPORTED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::UriTooLong => "URI_TOO_LONG",
            ErrorCode::HeadersTooLarge => "HEADERS_TOO_LARGE",
            ErrorCode::Dns => "DNS",
            ErrorCode::Netunreach => "NETUNREACH",
            ErrorCode::Hostunreach => "HOSTUNREACH",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Busy => "BUSY",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the API answers with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::NotSupported => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::UriTooLong => 414,
            ErrorCode::HeadersTooLarge => 431,
            // The request was fine; the resolver or the network said no.
            ErrorCode::Dns | ErrorCode::Netunreach | ErrorCode::Hostunreach => 502,
            ErrorCode::Timeout => 504,
            ErrorCode::Busy | ErrorCode::ShuttingDown => 503,
            // 499 is nginx's "client closed request": nobody reads it.
            ErrorCode::Cancelled => 499,
            ErrorCode::Denied | ErrorCode::Unknown => 500,
        }
    }

    /// The CLI's exit status: 2 for bad input (like clap's usage errors),
    /// 1 for everything else.
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::NotSupported => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `text` with its lines joined by " | " (blank ones dropped): one log
/// record for a message that spans lines (a config parser's snippet), which
/// a log shipper would otherwise read as several events.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_statuses_and_exit_codes() {
        let names: std::collections::HashSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "names are unique");
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                code.as_str(),
                "serde and as_str agree"
            );
            let status = code.http_status();
            let client_error = (400..500).contains(&status) && status != 499;
            assert_eq!(code.exit_code() == 2, status == 400, "{code}");
            assert!(client_error || status >= 499, "{code}: {status}");
        }
        assert_eq!(ErrorCode::Dns.http_status(), 502);
        assert_eq!(ErrorCode::Busy.http_status(), 503);
        assert_eq!(ErrorCode::Denied.http_status(), 500);
    }
}

/// A value that names none of a parameter's choices (the `FromStr` error of
/// the request's enums: protocol, TCP method, MDA rule). The value is kept
/// short: it may come from anyone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} ({choices})")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub choices: &'static str,
}

impl UnknownName {
    /// Longest part of the value kept.
    const SHOWN: usize = 64;

    pub fn new(what: &'static str, value: &str, choices: &'static str) -> UnknownName {
        let mut shown: String = value.chars().take(Self::SHOWN).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        UnknownName {
            what,
            value: shown,
            choices,
        }
    }
}
