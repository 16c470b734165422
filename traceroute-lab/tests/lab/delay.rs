//! The TUN-based delay element.

use traceroute_lab::{Family, Lab, named};

use crate::common::{ping_avg_ms, traceroute};

#[test]
fn ping_across_delay_link_takes_twice_the_delay() {
    let lab = Lab::up(&named::delay()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let avg = ping_avg_ms(&lab, "src", dst, 4);
        assert!(
            (35.0..80.0).contains(&avg),
            "{family}: 20 ms each way should give ~40 ms, got {avg} ms"
        );
    }
    // Traffic to the far end of the delayed link itself is delayed too.
    let far = lab.addr("r2", "r1", Family::V4).unwrap();
    let avg = ping_avg_ms(&lab, "r1", far, 3);
    assert!(
        (35.0..80.0).contains(&avg),
        "r1 -> r2 over the delayed link: {avg} ms"
    );
    // ...and the other links are not.
    let avg = ping_avg_ms(&lab, "src", lab.addr("r1", "src", Family::V4).unwrap(), 3);
    assert!(avg < 10.0, "src -> r1 is not delayed: {avg} ms");
}

#[test]
fn traceroute_through_delay_shows_each_router_once() {
    let lab = Lab::up(&named::delay()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let flag = if family == Family::V4 { "-4" } else { "-6" };
        let hops = traceroute(&lab, "src", &[flag, "-n", "-q1", "-w2", &dst.to_string()]);
        let mut expected = lab.expected_hops("src", "dst", family).unwrap();
        expected.push(Some(dst));
        assert_eq!(hops, expected, "{family}");
        assert_eq!(hops.len(), 3, "{family}: r1, r2, dst");
    }
}

#[test]
fn delay_silent_hides_a_far_router_between_answering_ones() {
    let lab = Lab::up(&named::delay_silent()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    assert_eq!(dst.to_string(), "198.18.4.2");
    let avg = ping_avg_ms(&lab, "src", dst, 3);
    assert!((35.0..80.0).contains(&avg), "src -> dst: {avg} ms");
    // One probe per hop: well inside every router's burst of 6.
    let hops = traceroute(&lab, "src", &["-n", "-q1", "-w2", &dst.to_string()]);
    let mut expected = lab.expected_hops("src", "dst", Family::V4).unwrap();
    expected.push(Some(dst));
    assert_eq!(hops, expected);
    assert_eq!(hops[1], None, "r2 is silent");
    assert_eq!(hops.len(), 4, "r1, r2, r3, dst");
}
