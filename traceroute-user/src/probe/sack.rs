//! Probes inside an established TCP connection (`tcp_method=sack`): after a
//! real handshake, one-byte segments of that connection with growing TTLs.
//! Stateful firewalls pass them as established traffic. Each probe owns two
//! bytes of sequence space above a one-byte hole at the connection's next
//! sequence number, so the destination queues it out of order and answers
//! with a duplicate ACK whose first SACK block (RFC 2018: the most recent
//! segment) starts at the probe's sequence number; routers on the way quote
//! that sequence number in their ICMP errors. The connection's initial
//! sequence numbers, chosen by the two kernels, are what a forger would have
//! to guess.

use super::id::{ProbeId, Ttl};

/// Where the connection stands when probing starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Connection {
    /// Our next sequence number (our initial one + 1).
    pub next_seq: u32,
    /// What we acknowledge: their initial sequence number + 1.
    pub ack: u32,
}

/// Sequence slots per TTL: 16 attempts, each also as a re-probe.
const SLOTS_PER_TTL: u32 = 32;
/// Attempts a slot can tell apart.
pub const MAX_ATTEMPTS: u8 = 16;
/// The wire attempt's re-probe bit (see `trace::prober`).
const REPROBE: u8 = 0x80;

fn slot(id: ProbeId) -> u32 {
    let attempt = id.attempt();
    let reprobe = if attempt & REPROBE != 0 { 16 } else { 0 };
    u32::from(id.ttl().get()) * SLOTS_PER_TTL + u32::from(attempt & 0x0f) + reprobe
}

/// The sequence number of probe `id` (attempts above [`MAX_ATTEMPTS`] share
/// slots; the tracer never sends that many per TTL).
pub fn seq_of(connection: Connection, id: ProbeId) -> u32 {
    connection.next_seq.wrapping_add(2 + 2 * slot(id))
}

/// The probe whose segment starts at `seq`, if `seq` is one of ours.
pub fn probe_of(connection: Connection, seq: u32) -> Option<ProbeId> {
    let offset = seq.wrapping_sub(connection.next_seq);
    if offset < 2 || !offset.is_multiple_of(2) {
        return None;
    }
    let slot = (offset - 2) / 2;
    let ttl = Ttl::new(u8::try_from(slot / SLOTS_PER_TTL).ok()?)?;
    let bits = (slot % SLOTS_PER_TTL) as u8;
    let attempt = (bits & 0x0f) | if bits & 0x10 != 0 { REPROBE } else { 0 };
    Some(ProbeId::new(ttl, attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_has_its_own_even_offset_and_decodes_back() {
        let c = Connection {
            next_seq: u32::MAX - 100,
            ack: 7,
        };
        let mut seen = std::collections::HashSet::new();
        for ttl in 1..=255u8 {
            for attempt in (0..MAX_ATTEMPTS).chain((0..MAX_ATTEMPTS).map(|a| a | REPROBE)) {
                let id = ProbeId::new(Ttl::new(ttl).unwrap(), attempt);
                let seq = seq_of(c, id);
                assert!(seen.insert(seq), "{id:?}");
                assert_eq!(probe_of(c, seq), Some(id));
                // The byte after it is never another probe's start.
                assert_eq!(probe_of(c, seq.wrapping_add(1)), None);
            }
        }
        // The hole and anything below it are nobody's.
        assert_eq!(probe_of(c, c.next_seq), None);
        assert_eq!(probe_of(c, c.next_seq.wrapping_sub(2)), None);
        // All of it fits in a 64 KiB receive window.
        let last = ProbeId::new(Ttl::new(255).unwrap(), 15 | REPROBE);
        assert!(seq_of(c, last).wrapping_sub(c.next_seq) < 65_535);
    }
}
