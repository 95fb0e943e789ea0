//! When to stop trying a mirror cluster that keeps failing (docs/semantics.md R165). A mirror
//! that refuses connections fails fast, so the in-flight cap never fills: without a breaker every
//! request would pay a connection attempt and an error reply for its copy. After
//! [`FAILURES_TO_OPEN`] failures in a row, copies to that cluster are skipped for a pause that
//! starts at [`BASE_PAUSE_NANOS`] and doubles up to [`MAX_PAUSE_NANOS`]; then one probe copy
//! goes, and its answer closes the breaker or opens it again for the doubled pause.
//!
//! Envoy's outlier detection works the same way on a cluster's hosts (`consecutive_5xx` 5,
//! ejection time growing with each ejection); this one acts before the copy is even made.

use std::collections::HashMap;

/// Failures in a row that open a cluster's breaker (Envoy's `consecutive_5xx` default).
pub const FAILURES_TO_OPEN: u32 = 5;
/// The first pause, 1 s: a mirror that comes back gets its copies again soon.
pub const BASE_PAUSE_NANOS: u64 = 1_000_000_000;
/// The longest pause, 30 s (Envoy's `base_ejection_time` default).
pub const MAX_PAUSE_NANOS: u64 = 30_000_000_000;

#[derive(Debug, Clone, Default)]
struct State {
    failures: u32,
    /// Zero while closed.
    pause: u64,
    open_until: u64,
    /// The one probe copy of a paused cluster is out.
    probing: bool,
}

/// One breaker per mirror cluster of a VM (clusters come from the configuration, so the map is
/// as large as its list of mirror targets, never larger).
#[derive(Debug, Clone, Default)]
pub struct MirrorBreakers {
    clusters: HashMap<String, State>,
}

impl MirrorBreakers {
    /// May a copy go to `cluster` now? While a breaker is open: no; once its pause is over, yes
    /// for exactly one probe until that probe's answer (or expiry) is reported.
    pub fn allows(&mut self, cluster: &str, now: u64) -> bool {
        let Some(s) = self.clusters.get_mut(cluster) else { return true };
        if s.pause == 0 {
            return true;
        }
        if s.probing || now < s.open_until {
            return false;
        }
        s.probing = true;
        true
    }

    /// A copy to `cluster` failed (error status, reset, timeout, refused, or never answered).
    pub fn failed(&mut self, cluster: &str, now: u64) {
        let s = match self.clusters.get_mut(cluster) {
            Some(s) => s,
            None => self.clusters.entry(cluster.to_string()).or_default(),
        };
        s.failures = s.failures.saturating_add(1);
        // Open on the failure that reaches the threshold, and again when the probe fails; the
        // late failures of copies sent before the breaker opened do not stretch the pause.
        if s.pause == 0 && s.failures >= FAILURES_TO_OPEN {
            s.pause = BASE_PAUSE_NANOS;
            s.open_until = now.saturating_add(s.pause);
        } else if s.probing {
            s.probing = false;
            s.pause = s.pause.saturating_mul(2).min(MAX_PAUSE_NANOS);
            s.open_until = now.saturating_add(s.pause);
        }
    }

    /// A copy to `cluster` was answered without error: the mirror works, the breaker closes.
    pub fn succeeded(&mut self, cluster: &str) {
        if let Some(s) = self.clusters.get_mut(cluster) {
            *s = State::default();
        }
    }

    /// Forgets every cluster (a new configuration starts afresh).
    pub fn clear(&mut self) {
        self.clusters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn five_failures_in_a_row_pause_a_cluster_then_one_probe_goes() {
        let mut b = MirrorBreakers::default();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.failed("m", 0);
            assert!(b.allows("m", 0));
        }
        b.failed("m", 0);
        assert!(!b.allows("m", 0), "open after the fifth failure");
        assert!(b.allows("other", 0), "other clusters are not affected");
        assert!(!b.allows("m", S - 1));
        assert!(b.allows("m", S), "the probe after the first pause");
        assert!(!b.allows("m", S), "one probe at a time");
        b.failed("m", S);
        assert!(!b.allows("m", 3 * S - 1), "the probe failed: twice the pause");
        assert!(b.allows("m", 3 * S));
        b.succeeded("m");
        assert!(b.allows("m", 3 * S) && b.allows("m", 3 * S), "closed again");
        b.failed("m", 3 * S);
        assert!(b.allows("m", 3 * S), "the count starts again from zero");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn late_failures_do_not_stretch_the_pause_and_it_stops_growing() {
        let mut b = MirrorBreakers::default();
        for _ in 0..50 {
            b.failed("m", 0);
        }
        assert!(b.allows("m", S), "failures of copies sent before it opened: still 1 s");
        let mut now = S;
        for _ in 0..20 {
            b.failed("m", now);
            now += MAX_PAUSE_NANOS;
            assert!(b.allows("m", now), "never paused longer than 30 s");
        }
        b.clear();
        assert!(b.allows("m", 0));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_success_between_failures_keeps_the_breaker_closed() {
        let mut b = MirrorBreakers::default();
        for _ in 0..3 {
            for _ in 0..FAILURES_TO_OPEN - 1 {
                b.failed("m", 0);
            }
            b.succeeded("m");
        }
        assert!(b.allows("m", 0));
    }
}
