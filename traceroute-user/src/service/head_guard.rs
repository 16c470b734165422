//! Checks every request head before hyper parses it, so that malformed and
//! oversized requests get the API's JSON `{code, message}` body instead of
//! hyper's bare `400`/`431` (hyper offers no hook for its parse errors).
//!
//! [`HeadGuard`] sits between the socket and hyper. It holds back each request
//! head until it is complete, checks it with `httparse` (hyper's own parser,
//! same limits), and passes it on. A head that fails is replaced by a
//! synthetic `GET /.rejected/<nonce>` request with `Connection: close`; the
//! connection's service answers it with the stored [`Rejection`] through the
//! normal router. That keeps hyper in charge of ordering (answers to earlier
//! pipelined requests go out first), of closing, and of noticing a client
//! that went away, and the error is counted like any other answer.
//!
//! Request bodies are passed through by `Content-Length`. After a chunked
//! body the guard stops checking that connection (hyper still parses it, and
//! answers its own errors bare): no endpoint takes a body, so only a client
//! already sending nonsense gets there.

use crate::clock::MonotonicTime;
use crate::error::ErrorCode;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ServiceError;

/// Largest request head accepted (request line and headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most header lines in one request (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// Why a connection's request was refused before routing.
pub type Rejection = ServiceError;

/// What the guard of one connection and that connection's service share.
pub struct Verdict {
    /// Names the synthetic request; a client cannot guess it.
    nonce: u64,
    rejection: OnceLock<Rejection>,
    /// Since when (CLOCK_MONOTONIC ns) the connection has been waiting for
    /// a request head; 0 while a request is being served. The listener sheds
    /// the connection that has waited longest when it needs room.
    waiting_since: AtomicU64,
}

impl Verdict {
    pub fn new() -> Arc<Verdict> {
        Arc::new(Verdict {
            nonce: getrandom::u64().unwrap_or_else(|_| std::process::id().into()),
            rejection: OnceLock::new(),
            waiting_since: AtomicU64::new(MonotonicTime::now().as_nanos().max(1)),
        })
    }

    /// Since when the connection has been waiting for a request (idle, or
    /// a head arriving slowly); `None` while a request is served.
    pub fn waiting_since(&self) -> Option<MonotonicTime> {
        match self.waiting_since.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(MonotonicTime::from_nanos(ns)),
        }
    }

    fn serving(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    fn waiting(&self) {
        if self.waiting_since.load(Ordering::Relaxed) == 0 {
            let now = MonotonicTime::now().as_nanos().max(1);
            self.waiting_since.store(now, Ordering::Relaxed);
        }
    }

    fn path(&self) -> String {
        format!("/.rejected/{:016x}", self.nonce)
    }

    /// The rejection that `path` stands for, if it is this connection's
    /// synthetic request.
    pub fn rejection_for(&self, path: &str) -> Option<&Rejection> {
        let rejection = self.rejection.get()?;
        (path == self.path()).then_some(rejection)
    }
}

/// What the front of the buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    NeedMore,
    Head { len: usize, body: Body },
    Reject(Rejection),
}

#[derive(Debug, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    /// Chunked or otherwise framed: hyper takes it from here.
    Other,
}

/// Finds the end of a request head without re-reading bytes it has seen, so
/// a head sent a byte at a time costs linear work.
#[derive(Default)]
struct Scanner {
    searched: usize,
    line_checked: bool,
}

impl Scanner {
    /// `buf` starts at a request line (leading empty lines are dropped by
    /// the caller).
    fn scan(&mut self, buf: &[u8]) -> Scan {
        if !self.line_checked
            && let Some(nl) = buf.iter().position(|&b| b == b'\n')
        {
            // Garbage (a TLS hello on the TCP port, say) is refused at its
            // first line rather than after the header timeout.
            self.line_checked = true;
            let mut none = [];
            if let Err(e) = httparse::Request::new(&mut none).parse(&buf[..=nl])
                && e != httparse::Error::TooManyHeaders
            {
                return Scan::Reject(malformed(e));
            }
        }
        let from = self.searched.saturating_sub(2);
        let end = buf[from..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| from + i + 2)
            .or_else(|| {
                buf[from..]
                    .windows(3)
                    .position(|w| w == b"\n\r\n")
                    .map(|i| from + i + 3)
            });
        let Some(end) = end else {
            self.searched = buf.len();
            if buf.len() > MAX_HEADER_BYTES {
                return Scan::Reject(too_large());
            }
            return Scan::NeedMore;
        };
        *self = Scanner::default();
        if end > MAX_HEADER_BYTES {
            return Scan::Reject(too_large());
        }
        check_head(&buf[..end])
    }
}

fn malformed(e: httparse::Error) -> Rejection {
    ServiceError::new(
        ErrorCode::InvalidRequest,
        format!("malformed HTTP request: {e}"),
    )
}

fn too_large() -> Rejection {
    ServiceError::new(
        ErrorCode::HeadersTooLarge,
        format!(
            "the request head is limited to {} KiB and {MAX_HEADERS} headers",
            MAX_HEADER_BYTES / 1024
        ),
    )
}

fn check_head(head: &[u8]) -> Scan {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return Scan::Reject(ServiceError::new(
                ErrorCode::InvalidRequest,
                "malformed HTTP request: incomplete head",
            ));
        }
        Err(httparse::Error::TooManyHeaders) => return Scan::Reject(too_large()),
        Err(e) => return Scan::Reject(malformed(e)),
    };
    let mut body = Body::None;
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // hyper frames a body only when chunked is the last coding and
            // answers anything else without our JSON body: refused here.
            let last = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim);
            if !last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
                return Scan::Reject(ServiceError::new(
                    ErrorCode::InvalidRequest,
                    "malformed HTTP request: unsupported Transfer-Encoding (only chunked is understood)",
                ));
            }
            body = Body::Other;
            break;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only: Rust's parser would take "+5", hyper does not.
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (n, &body) {
                (Some(n), Body::None) => body = Body::Length(n),
                (Some(n), Body::Length(m)) if n == *m => {}
                _ => {
                    return Scan::Reject(ServiceError::new(
                        ErrorCode::InvalidRequest,
                        "malformed HTTP request: invalid or conflicting Content-Length",
                    ));
                }
            }
        }
    }
    Scan::Head { len, body }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Checking,
    /// Bytes go through unchecked (after a body hyper frames).
    PassThrough,
    /// The synthetic request was queued; nothing more is read.
    Rejected,
}

/// The reading side of a connection, checked head by head; writes go
/// straight through.
pub struct HeadGuard<S> {
    inner: S,
    /// Bytes read from the socket, not yet given to hyper.
    buf: Vec<u8>,
    /// How many bytes at the front of `buf` hyper may have.
    cleared: usize,
    /// Body bytes still to pass before the next head.
    body_left: u64,
    state: State,
    scanner: Scanner,
    verdict: Arc<Verdict>,
}

impl<S> HeadGuard<S> {
    pub fn new(inner: S, verdict: Arc<Verdict>) -> Self {
        HeadGuard {
            inner,
            buf: Vec::new(),
            cleared: 0,
            body_left: 0,
            state: State::Checking,
            scanner: Scanner::default(),
            verdict,
        }
    }

    fn reject(&mut self, rejection: Rejection) {
        tracing::debug!(code = rejection.code.as_str(), "{}", rejection.message);
        let _ = self.verdict.rejection.set(rejection);
        self.buf = format!(
            "GET {} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n",
            self.verdict.path()
        )
        .into_bytes();
        self.cleared = self.buf.len();
        self.state = State::Rejected;
    }

    /// Advances over what is buffered: clears body bytes and complete heads,
    /// or rejects. Returns whether more bytes must be read first.
    fn advance(&mut self) -> bool {
        if self.state == State::PassThrough {
            self.cleared = self.buf.len();
            return self.buf.is_empty();
        }
        if self.state == State::Rejected {
            return false;
        }
        if self.body_left > 0 {
            if self.buf.is_empty() {
                return true;
            }
            let n = self.body_left.min(self.buf.len() as u64);
            self.body_left -= n;
            self.cleared = n as usize;
            return false;
        }
        // Empty lines before a request line are allowed (RFC 9112 §2.2).
        let blank = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if blank > 0 {
            self.buf.drain(..blank);
            self.scanner = Scanner::default();
        }
        if self.buf.is_empty() {
            return true;
        }
        match self.scanner.scan(&self.buf) {
            Scan::NeedMore => true,
            Scan::Head { len, body } => {
                self.verdict.serving();
                self.cleared = len;
                match body {
                    Body::None => {}
                    Body::Length(n) => self.body_left = n,
                    Body::Other => self.state = State::PassThrough,
                }
                false
            }
            Scan::Reject(r) => {
                self.reject(r);
                false
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.cleared > 0 {
                let n = this.cleared.min(dst.remaining());
                dst.put_slice(&this.buf[..n]);
                this.buf.drain(..n);
                this.cleared -= n;
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Rejected {
                // hyper closes after answering the synthetic request.
                return Poll::Pending;
            }
            if !this.advance() {
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                if this.buf.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                // The client stopped mid-head or mid-body: hand hyper what
                // there is; it ends the connection.
                this.state = State::PassThrough;
            }
            this.buf.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // An answer goes out: from now on it waits for the next request.
        this.verdict.waiting();
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.verdict.waiting();
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Everything the guard passes on for `input`, and the rejection it stored.
    async fn through(input: &[u8]) -> (Vec<u8>, Option<Rejection>) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let verdict = Verdict::new();
        let mut guard = HeadGuard::new(server, Arc::clone(&verdict));
        client.write_all(input).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(std::time::Duration::from_millis(50), guard.read(&mut chunk))
                .await
            {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("{e}"),
            }
        }
        (out, verdict.rejection.get().cloned())
    }

    fn synthetic(out: &[u8]) -> bool {
        String::from_utf8_lossy(out).contains("GET /.rejected/")
    }

    #[tokio::test]
    async fn valid_requests_pass_unchanged_with_their_bodies() {
        let input = b"\r\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
GET /metrics HTTP/1.1\n\n";
        let (out, rejected) = through(input).await;
        assert_eq!(rejected, None);
        assert_eq!(out, &input[2..]);
    }

    #[tokio::test]
    async fn a_malformed_head_becomes_the_synthetic_request_after_earlier_ones() {
        let (out, rejected) =
            through(b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nbad header\r\n\r\n")
                .await;
        let rejected = rejected.expect("rejected");
        assert_eq!(rejected.code, ErrorCode::InvalidRequest);
        assert!(rejected.message.contains("header"), "{}", rejected.message);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /health HTTP/1.1\r\n\r\nGET /.rejected/"));
        assert!(!text.contains("bad header"));
    }

    #[tokio::test]
    async fn garbage_is_refused_at_its_first_line() {
        let (out, rejected) = through(b"\x16\x03\x01\x02\x00 hello\nmore").await;
        assert_eq!(rejected.map(|r| r.code), Some(ErrorCode::InvalidRequest));
        assert!(synthetic(&out));
    }

    #[tokio::test]
    async fn oversized_heads_and_too_many_headers_are_431() {
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(70 * 1024));
        let (out, rejected) = through(big.as_bytes()).await;
        assert_eq!(rejected.map(|r| r.code), Some(ErrorCode::HeadersTooLarge));
        assert!(synthetic(&out));

        // Never-ending head: refused once it passes the limit.
        let endless = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(70 * 1024));
        let (_, rejected) = through(endless.as_bytes()).await;
        assert_eq!(rejected.map(|r| r.code), Some(ErrorCode::HeadersTooLarge));

        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let (_, rejected) = through(many.as_bytes()).await;
        assert_eq!(rejected.map(|r| r.code), Some(ErrorCode::HeadersTooLarge));
    }

    #[tokio::test]
    async fn conflicting_lengths_are_refused_and_chunked_bodies_pass_through() {
        let (_, rejected) =
            through(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab").await;
        assert_eq!(rejected.map(|r| r.code), Some(ErrorCode::InvalidRequest));
        let chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nnot checked\r\n\r\n";
        let (out, rejected) = through(chunked).await;
        assert_eq!(rejected, None);
        assert_eq!(out, chunked);
        // What hyper would refuse without a body is refused here, with one.
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        ] {
            let (_, rejected) = through(head).await;
            assert_eq!(
                rejected.map(|r| r.code),
                Some(ErrorCode::InvalidRequest),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let gzip_chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(through(gzip_chunked).await.1, None);
    }

    #[test]
    fn a_head_fed_byte_by_byte_is_scanned_in_linear_time() {
        let head = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(60 * 1024));
        let mut scanner = Scanner::default();
        for end in 1..head.len() {
            assert_eq!(scanner.scan(&head.as_bytes()[..end]), Scan::NeedMore);
            // Each call looks only at the last few bytes again.
            assert!(scanner.searched == end);
        }
        assert!(matches!(
            scanner.scan(head.as_bytes()),
            Scan::Head {
                body: Body::None,
                ..
            }
        ));
    }

    #[test]
    fn only_this_connections_synthetic_path_carries_the_rejection() {
        let verdict = Verdict::new();
        assert!(verdict.rejection_for(&verdict.path()).is_none());
        let _ = verdict
            .rejection
            .set(ServiceError::new(ErrorCode::InvalidRequest, "x"));
        assert!(verdict.rejection_for(&verdict.path()).is_some());
        assert!(
            verdict
                .rejection_for("/.rejected/0000000000000000")
                .is_none()
        );
    }
}
