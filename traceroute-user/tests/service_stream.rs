//! Streamed answers (`stream=true`, `Accept: application/x-ndjson`): hop
//! events while the trace settles, then the record the plain answer gives;
//! a client that goes away cancels the trace and its probes. Needs root.

mod common;
mod service_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use service_support::{Agent, eventually, hop_addrs};
use traceroute_lab::{Family, Lab};

/// A streamed answer as it arrives: each NDJSON line with when it came.
struct Stream {
    reader: BufReader<UnixStream>,
    status: u16,
    content_type: String,
}

impl Stream {
    fn open(socket: &Path, target: &str, accept: &str) -> Stream {
        let mut s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut status = 0;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
                status = code[..3].parse().unwrap();
            } else if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-type")
            {
                content_type = v.trim().to_string();
            }
        }
        Stream {
            reader,
            status,
            content_type,
        }
    }

    /// The next chunk of the chunked body; `None` at its end.
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let mut size = String::new();
        self.reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).ok()?;
        data.truncate(size);
        (size > 0).then_some(data)
    }

    /// Every event until the answer ends, each with when it arrived.
    fn events(mut self) -> Vec<(Instant, Value)> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        while let Some(chunk) = self.chunk() {
            let at = Instant::now();
            pending.extend(chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                out.push((at, serde_json::from_slice(&line).unwrap()));
            }
        }
        assert!(pending.is_empty(), "a line without its newline");
        out
    }
}

#[test]
fn a_streamed_trace_yields_hops_before_the_record_and_the_same_record() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let agent = Agent::start(&lab, "src", &["--capture", "ebpf"]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let query = format!("/traceroute/{dst}?protocol=udp&traceroute_queries=2");
    let stream = Stream::open(
        &agent.socket,
        &query,
        "application/json, application/x-ndjson",
    );
    assert_eq!(stream.status, 200);
    assert_eq!(stream.content_type, "application/x-ndjson");
    let events = stream.events();
    let (last_at, last) = events.last().expect("events");
    assert_eq!(last["event"], "record", "{last}");
    let record = &last["record"];
    common::agent::assert_valid(record);
    // The record's frame first (no hops yet), for a table's header.
    let (_, start) = &events[0];
    assert_eq!(start["event"], "start", "{start}");
    assert_eq!(start["record"]["destination"], record["destination"]);
    assert!(
        start["record"]["traceroute"]["runs"][0]["hops"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Then hop events, one per TTL in order, each holding that TTL's hop of
    // every run exactly as the record has it.
    let hops = &events[1..events.len() - 1];
    assert!(!hops.is_empty());
    for (i, (at, e)) in hops.iter().enumerate() {
        assert_eq!(e["event"], "hop", "{e}");
        let ttl = e["ttl"].as_u64().unwrap() as usize;
        assert_eq!(ttl, i + 1, "{e}");
        for (run, hop) in e["hops"].as_array().unwrap().iter().enumerate() {
            assert_eq!(hop, &record["traceroute"]["runs"][run]["hops"][ttl - 1]);
        }
        assert!(at <= last_at);
    }
    // The first router's hop came before the record did.
    assert!(
        hops[0].0 < *last_at,
        "the first hop arrived with the record"
    );
    // The same path as the plain answer, and as the lab has it.
    let plain = agent
        .get(&format!(
            "/traceroute/{dst}?protocol=udp&traceroute_queries=2"
        ))
        .json();
    let want = common::agent::expected(&lab, "src", "dst", dst);
    assert_eq!(hop_addrs(record, 0), want);
    assert_eq!(hop_addrs(&plain, 0), want);
    // The parameter asks for the same.
    let by_param = Stream::open(
        &agent.socket,
        &format!("{query}&stream=true"),
        "application/json",
    );
    assert_eq!(by_param.content_type, "application/x-ndjson");
    let events = by_param.events();
    assert_eq!(events.last().unwrap().1["event"], "record");
}

#[test]
fn a_client_that_goes_away_cancels_the_trace_and_its_probes() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let agent = Agent::start(&lab, "src", &["--capture", "ebpf"]);
    // Nobody has this address on dst's link: r4 answers for it only once its
    // neighbour lookup gives up, seconds later.
    let nobody = "198.18.5.99";
    let mut stream = Stream::open(
        &agent.socket,
        &format!("/traceroute/{nobody}?protocol=udp&max_ttl=30&timeout=3000000000&stream=true"),
        "*/*",
    );
    assert_eq!(stream.status, 200);
    // The record's frame, then the first hop (one chunk or two).
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"event\":\"hop\"") {
        seen.extend(stream.chunk().expect("a first hop event"));
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("{\"event\":\"start\""));
    assert_eq!(agent.get("/health").json()["api_traces_in_flight"], 1);
    drop(stream);
    let cancelled = || {
        agent.get("/health").json()["api_traces_in_flight"] == 0
            && agent.metric("traceroute_agent_failed_runs_total", "code=\"CANCELLED\"") >= 1.0
    };
    assert!(
        eventually(Duration::from_secs(2), cancelled),
        "the trace ran on:\n{}",
        agent.log()
    );
    // Nothing leaves for that address any more (other traffic, such as a
    // neighbour lookup, may).
    let ifname = lab.ifname("src", "r1").unwrap().to_string();
    let watch = lab
        .exec(
            "src",
            "timeout",
            [
                "1", "tcpdump", "-i", &ifname, "-n", "-l", "dst", "host", nobody,
            ],
        )
        .unwrap();
    let probes = String::from_utf8_lossy(&watch.stdout);
    assert!(
        probes.trim().is_empty(),
        "probes after the client went: {probes:?}"
    );
}
