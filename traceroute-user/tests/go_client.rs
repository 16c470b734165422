//! The agent as the system-probe's Go client reads it. Records from the
//! service are decoded by `tests/go_client/decode.go` — Go's `encoding/json`
//! into structs with the field names, Go types and `omitempty` options of the
//! client's `payload.NetworkPath` — built with Debian's `golang-go`
//! (`cargo xtask test` installs it). Every record must decode, what Go reads
//! must equal what we sent, and each case checks one point where the two
//! used to differ. Needs root (labs).

mod common;
mod service_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::agent::{assert_valid, expected};
use serde_json::{Value, json};
use service_support::Agent;
use traceroute_lab::{Family, Hook, Lab, Proto};

/// Routers in the lab answer without limit; so may ours.
const CONFIG: &str = r#"
capture = "ebpf"
public_ip = "198.18.200.1"
router_icmp_burst = 10000
router_icmp_per_second = 10000
"#;

/// Keys the Go client's structs declare `omitempty`: sending one of them
/// empty is a difference (Go would leave it out). `tags` is the exception
/// the original contract makes: its example record carries `"tags": []`,
/// which Go decodes exactly as an absent list.
const OMITEMPTY: &[&str] = &[
    "via",
    "network_id",
    "service",
    "container_id",
    "public_ip",
    "test_config_name",
    "reverse_dns",
    "rtt",
];

/// The decoder, built once per test binary.
fn decoder() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-client");
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("decode");
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go_client/decode.go");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(source)
            .env("GOCACHE", dir.join("cache"))
            .env("GO111MODULE", "off")
            .output()
            .expect("`go` (Debian golang-go; `cargo xtask test` installs it)");
        assert!(
            out.status.success(),
            "go build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        binary
    })
}

/// What the Go client's structs make of a record.
fn go_decode(record: &Value) -> Value {
    let mut child = Command::new(decoder())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = serde_json::to_vec(record).unwrap();
    line.push(b'\n');
    child.stdin.take().unwrap().write_all(&line).unwrap();
    let out = child.wait_with_output().unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).expect("decoder output");
    assert!(
        answer.get("error").is_none(),
        "the Go client cannot decode the record: {answer}\n{record:#}"
    );
    answer["decoded"].clone()
}

/// A value Go gives a field that was absent.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// What Go read (`go`) equals what we sent (`ours`), field by field. Our
/// extra fields are unknown to Go and ignored; Go's fields we do not send
/// must be ones it reads as zero.
fn assert_agrees(ours: &Value, go: &Value, at: &str) {
    match (ours, go) {
        (Value::Object(o), Value::Object(g)) => {
            for (key, gv) in g {
                match o.get(key) {
                    Some(ov) => assert_agrees(ov, gv, &format!("{at}.{key}")),
                    None => assert!(is_zero(gv), "{at}.{key}: Go has {gv}, we sent nothing"),
                }
            }
            for (key, ov) in o {
                let dropped = !g.contains_key(key) && OMITEMPTY.contains(&key.as_str());
                assert!(
                    !dropped,
                    "{at}.{key}: we sent {ov}, which Go's omitempty leaves out"
                );
            }
        }
        (Value::Array(o), Value::Array(g)) => {
            assert_eq!(o.len(), g.len(), "{at}: lengths");
            for (i, (ov, gv)) in o.iter().zip(g).enumerate() {
                assert_agrees(ov, gv, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(o), Value::Number(g)) => {
            let (o, g) = (o.as_f64().unwrap(), g.as_f64().unwrap());
            // float32 fields (the loss) keep about 7 digits.
            assert!(
                (o - g).abs() <= 1e-6 * o.abs().max(1.0),
                "{at}: we sent {o}, Go read {g}"
            );
        }
        _ => assert_eq!(ours, go, "{at}"),
    }
}

/// Asks the agent, checks the record, and returns (ours, what Go read).
fn case(agent: &Agent, name: &str, target: &str) -> (Value, Value) {
    let r = agent.get(target);
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    let ours = r.json();
    assert_valid(&ours);
    let go = go_decode(&ours);
    assert_agrees(&ours, &go, name);
    (ours, go)
}

fn rtts(go: &Value) -> Vec<f64> {
    go["e2e_probe"]["rtts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn the_go_client_reads_every_case_as_it_expects() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let path_len = expected(&lab, "src", "dst", dst).len() as u64;

    // Reached, with end-to-end probes that are all answered.
    let (ours, go) = case(
        &agent,
        "reached with e2e",
        &format!(
            "/traceroute/{dst}?protocol=TCP&port=80&traceroute_queries=2&e2e_queries=10&timeout=500000000"
        ),
    );
    let e2e = &go["e2e_probe"];
    assert_eq!(
        (&e2e["packets_sent"], &e2e["packets_received"]),
        (&json!(10), &json!(10))
    );
    assert_eq!(e2e["packet_loss_percentage"], 0.0);
    assert!(rtts(&go).iter().all(|r| *r > 0.0), "{e2e}");
    let hop_count = &go["traceroute"]["hop_count"];
    assert_eq!(
        (&hop_count["min"], &hop_count["max"]),
        (&json!(path_len), &json!(path_len))
    );
    // No reverse DNS asked: omitted, not `[]`.
    for run in ours["traceroute"]["runs"].as_array().unwrap() {
        assert!(run["destination"].get("reverse_dns").is_none(), "{run}");
    }
    assert_eq!(go["source"]["public_ip"], "198.18.200.1");
    assert_eq!(go["destination"]["port"], 80);

    // End-to-end probes go at max_ttl: short of the destination, every one
    // is lost, one 0 per probe.
    let (_, go) = case(
        &agent,
        "e2e at a short max_ttl",
        &format!(
            "/traceroute/{dst}?protocol=TCP&port=80&max_ttl=2&e2e_queries=5&traceroute_queries=1"
        ),
    );
    let e2e = &go["e2e_probe"];
    assert_eq!(rtts(&go), vec![0.0; 5], "{e2e}");
    assert_eq!(
        (&e2e["packets_sent"], &e2e["packets_received"]),
        (&json!(5), &json!(0))
    );
    assert_eq!(e2e["packet_loss_percentage"], 1.0);
    assert_eq!(go["traceroute"]["hop_count"]["max"], 2);

    // Unknown and repeated parameters (first wins), a max_ttl past 64, and
    // timeout=0, as a newer client may send them.
    let (_, go) = case(
        &agent,
        "lenient parameters",
        &format!(
            "/traceroute/{dst}?protocol=UDP&port=33434&port=9&max_ttl=200&timeout=0\
             &traceroute_queries=1&tcp_syn_paris_traceroute_mode=true&some_future_option=1"
        ),
    );
    assert_eq!(go["destination"]["port"], 33434);
    let hops = go["traceroute"]["runs"][0]["hops"].as_array().unwrap();
    assert_eq!(hops.last().unwrap()["ip_address"], dst.to_string());

    // IPv6, ICMP.
    let dst6 = lab.primary("dst", Family::V6).unwrap();
    let (_, go) = case(
        &agent,
        "IPv6 ICMP",
        &format!("/traceroute/{dst6}?protocol=ICMP&traceroute_queries=1&e2e_queries=3"),
    );
    assert_eq!(
        go["traceroute"]["runs"][0]["destination"]["ip_address"],
        dst6.to_string()
    );
    assert_eq!(go["e2e_probe"]["packets_received"], 3);
}

#[test]
fn when_nothing_answers_the_hop_count_is_every_hop() {
    let topology = traceroute_lab::named::chain()
        .silent("r1")
        .silent("r2")
        .drop_proto("dst", Proto::Tcp, Hook::Input);
    let lab = Lab::up(&topology).unwrap();
    let agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let (ours, go) = case(
        &agent,
        "nothing answers",
        &format!(
            "/traceroute/{dst}?protocol=TCP&port=80&max_ttl=3&traceroute_queries=2&timeout=200000000"
        ),
    );
    for run in go["traceroute"]["runs"].as_array().unwrap() {
        let hops = run["hops"].as_array().unwrap();
        assert_eq!(hops.len(), 3);
        assert!(
            hops.iter()
                .all(|h| h["ip_address"] == "" && h["reachable"] == false)
        );
    }
    let hop_count = &go["traceroute"]["hop_count"];
    assert_eq!(
        (&hop_count["min"], &hop_count["max"]),
        (&json!(3), &json!(3))
    );
    assert_eq!(ours["traceroute"]["hop_count"]["avg"], 3.0);
}

/// The e2e record of 100 TCP probes to dst:80 while dst's input chain runs
/// `rule` on what it receives; checked for consistency before it is returned.
fn e2e_through(rule: &str) -> Value {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    for command in [
        "add table inet e2e_loss",
        "add chain inet e2e_loss input { type filter hook input priority 0 ; }",
        &format!("add rule inet e2e_loss input {rule}"),
    ] {
        let out = lab
            .exec("dst", "nft", command.split(' ').collect::<Vec<_>>())
            .unwrap();
        assert!(out.status.success(), "nft {command}: {out:?}");
    }
    let agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let (_, go) = case(
        &agent,
        rule,
        &format!(
            "/traceroute/{dst}?protocol=TCP&port=80&traceroute_queries=1&e2e_queries=100&timeout=300000000"
        ),
    );
    let e2e = go["e2e_probe"].clone();
    let rtts = rtts(&go);
    assert_eq!(e2e["packets_sent"], 100, "every probe sent and waited for");
    assert_eq!(rtts.len(), 100);
    let lost = rtts.iter().filter(|r| **r == 0.0).count();
    assert_eq!(e2e["packets_received"], 100 - lost as u64);
    let loss = e2e["packet_loss_percentage"].as_f64().unwrap();
    assert!((loss - lost as f64 / 100.0).abs() < 1e-6, "{e2e}");
    e2e
}

#[test]
fn end_to_end_loss_follows_loss_injected_on_the_last_link() {
    // dst drops 30 % of what arrives for port 80, at random: our SYNs, and
    // the RSTs our kernel sends for its SYN-ACKs.
    let e2e = e2e_through("tcp dport 80 numgen random mod 100 < 30 drop");
    let loss = e2e["packet_loss_percentage"].as_f64().unwrap();
    // 30 % over 100 probes: the standard deviation is 4.6 points, so this
    // band is more than 3 of them wide on each side.
    assert!((0.15..=0.45).contains(&loss), "loss {loss}: {e2e}");
}

#[test]
fn lost_rsts_leave_half_open_requests_that_invent_no_loss() {
    // dst never sees the RSTs our kernel sends for its SYN-ACKs, so each SYN
    // leaves a half-open request behind. The next SYN must clear it (dst
    // answers with RST) rather than be ignored: that needs sequence numbers
    // in probe order. With a wrapping sequence, every probe after the wrap
    // went unanswered (77 % "loss" where nothing was lost).
    let e2e = e2e_through("tcp dport 80 tcp flags rst drop");
    assert_eq!(e2e["packet_loss_percentage"], 0.0, "{e2e}");
}
