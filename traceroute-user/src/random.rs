//! Randomness where spreading in time matters: targets' first runs over
//! their interval, and retries of many agents after a shared outage (so
//! that a store coming back is not met by a fleet at the same instant).

use std::time::Duration;

/// A uniform number in [0, 1) (0.5 if the system cannot give randomness).
pub fn unit() -> f64 {
    match getrandom::u64() {
        Ok(bits) => (bits >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// `d` moved by up to `spread` of itself either way (`spread` 0.2: ±20 %).
pub fn jittered(d: Duration, spread: f64) -> Duration {
    d.mul_f64(1.0 - spread + 2.0 * spread * unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_in_their_range() {
        for _ in 0..1000 {
            let u = unit();
            assert!((0.0..1.0).contains(&u));
            let d = jittered(Duration::from_secs(10), 0.2);
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12), "{d:?}");
        }
    }
}
