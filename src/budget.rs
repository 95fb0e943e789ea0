//! What one VM may spend on mirrors at once: bytes of request bodies held for copies, and copies
//! sent but not yet answered. Every stream of a VM draws on the same budget, so no mix of
//! concurrent requests can run the VM out of memory (an allocation failure traps the VM) or pile
//! up connections to a mirror that never answers. A mirror that does not fit is skipped; the
//! primary request never waits for the budget.
//!
//! A call holds its slot until it is answered or until its deadline (the mirror timeout plus a
//! grace period) has passed, whichever comes first. The deadline is what makes the slot count
//! exact whatever the host does with a call whose stream ended: if the host cancels it silently
//! the slot still comes back, and the call counts as failed once, either way.

use std::collections::{HashMap, VecDeque};

/// Per-VM mirror budget. Single-threaded (a VM runs on one worker), so plain fields.
#[derive(Debug, Clone, Default)]
pub struct MirrorBudget {
    max_bytes: u64,
    max_in_flight: u32,
    bytes: u64,
    /// Calls not yet answered: host token → mirror cluster.
    open: HashMap<u32, String>,
    /// (deadline in ns, token) in the order the calls started; answered tokens are skipped.
    deadlines: VecDeque<(u64, u32)>,
}

impl MirrorBudget {
    pub fn new(max_bytes: u64, max_in_flight: u32) -> Self {
        MirrorBudget { max_bytes, max_in_flight, ..MirrorBudget::default() }
    }

    /// Takes `n` more body bytes if they fit; a stream that gets `false` gives up its copy.
    pub fn reserve_bytes(&mut self, n: u64) -> bool {
        match self.bytes.checked_add(n) {
            Some(total) if total <= self.max_bytes => {
                self.bytes = total;
                true
            }
            _ => false,
        }
    }

    /// Gives back bytes a stream held (its copy was sent, dropped or the stream ended).
    pub fn release_bytes(&mut self, n: u64) {
        self.bytes = self.bytes.saturating_sub(n);
    }

    /// Frees the slots of calls whose deadline passed before `now`; returns their clusters
    /// (they count as failed: a mirror that never answered).
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let mut expired = Vec::new();
        while let Some(&(due, token)) = self.deadlines.front() {
            if due > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(cluster) = self.open.remove(&token) {
                expired.push(cluster);
            }
        }
        expired
    }

    /// Is a slot free for one more call? (Call [`expire`](Self::expire) first.)
    pub fn has_slot(&self) -> bool {
        self.open.len() < self.max_in_flight as usize
    }

    /// A call to `cluster` started with host token `token`, holding its slot until `due` at the
    /// latest.
    pub fn started(&mut self, token: u32, due: u64, cluster: &str) {
        if self.open.insert(token, cluster.to_string()).is_none() {
            // Deadlines arrive almost in order (one timeout per configuration); keep the queue
            // sorted so `expire` stays a pop from the front.
            let at = self.deadlines.iter().rposition(|&(d, _)| d <= due).map_or(0, |i| i + 1);
            self.deadlines.insert(at, (due, token));
        }
    }

    /// An answer (or the host's timeout) for `token`: its cluster if the call was still open,
    /// i.e. it is counted now and was not expired already.
    pub fn answered(&mut self, token: u32) -> Option<String> {
        let was_open = self.open.remove(&token);
        if self.open.is_empty() {
            self.deadlines.clear();
        }
        was_open
    }

    /// A new configuration brings new limits; what is held stays accounted.
    pub fn set_limits(&mut self, max_bytes: u64, max_in_flight: u32) {
        self.max_bytes = max_bytes;
        self.max_in_flight = max_in_flight;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn in_flight(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn bytes_are_shared_and_given_back() {
        let mut b = MirrorBudget::new(10, 1);
        assert!(b.reserve_bytes(6));
        assert!(!b.reserve_bytes(5), "6 + 5 is over 10");
        assert!(b.reserve_bytes(4));
        assert_eq!(b.bytes(), 10);
        b.release_bytes(6);
        assert!(b.reserve_bytes(5));
        assert!(!b.reserve_bytes(u64::MAX), "no overflow");
        b.release_bytes(100);
        assert_eq!(b.bytes(), 0, "never below zero");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn calls_are_capped_and_freed_by_answer_or_deadline_once() {
        let mut b = MirrorBudget::new(0, 2);
        b.started(1, 100, "a");
        b.started(2, 50, "b");
        assert!(!b.has_slot());
        assert_eq!(b.answered(1).as_deref(), Some("a"));
        assert_eq!(b.answered(1), None, "an answer is counted once");
        assert!(b.has_slot());
        b.started(3, 200, "c");
        assert!(b.expire(49).is_empty());
        assert_eq!(b.expire(150), ["b"], "call 2 hung past its deadline");
        assert_eq!(b.answered(2), None, "a late answer of an expired call is not counted again");
        assert_eq!(b.in_flight(), 1);
        assert_eq!(b.expire(u64::MAX), ["c"]);
        assert_eq!(b.in_flight(), 0);
        b.set_limits(0, 0);
        assert!(!b.has_slot());
    }
}
