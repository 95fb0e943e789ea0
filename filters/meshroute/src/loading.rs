//! A big table pushed to a worker loads in slices on its root context's timer, while the table
//! this VM served for the same plugin keeps serving (docs/semantics.md R242).
//!
//! Why: Envoy calls `on_configure` of every worker's VM on the worker's own thread, so a
//! 100,000-rule table that takes a VM a second to load held every request of the worker that
//! long. Refusing a bad table does not need the workers: Envoy first configures a fresh clone of
//! the VM on its main thread (the "canary", proxy-wasm-cpp-host `WasmHandleBase::canary`) and
//! refuses the push when that fails. A fresh VM has served nothing yet, so it loads whole and can
//! refuse; a worker that already serves this plugin accepts the push at once and loads it piece
//! by piece. Small tables load whole everywhere: they take less than one slice.
//!
//! The previous table is kept per VM, keyed by plugin name and root id (a push is a new root
//! context of the same plugin). Until its load ends, a worker serves the previous table, and
//! Envoy's `update_success` counts the push already; `meshroute.config.loaded` counts it when
//! the VM serves it. Two meshroute filters in one VM under the same plugin name and root id
//! would see each other's table during such a load: give each its own name.

use crate::host::Host;
use crate::{memory_bytes, Active};
use meshroute::table::{SlicedLoad, TableError};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Tables at least this long load in slices where they can. About 1,500 rules: loaded whole in
/// a VM they take about as long as a slice.
pub(crate) const SLICE_ABOVE: usize = 512 * 1024;

/// The work one timer tick does before it lets the worker serve again.
pub(crate) const SLICE: Duration = Duration::from_millis(10);

/// How many pieces go between two looks at the clock (a host call each).
const PIECES_PER_LOOK: u32 = 8;

thread_local! {
    /// The newest table each plugin of this VM serves (plugin key, root context that loaded
    /// it, table); a VM runs one plugin or a few.
    static SERVING: RefCell<Vec<(String, u32, Rc<Active>)>> = const { RefCell::new(Vec::new()) };
}

/// The table this VM serves for the plugin, if any.
pub(crate) fn serving(key: &str) -> Option<Rc<Active>> {
    SERVING.with(|s| s.borrow().iter().find(|(k, _, _)| k == key).map(|(_, _, a)| a.clone()))
}

/// `root` serves `active` now; a root context created later (a later push) is never replaced
/// by an earlier one whose slices ended after its own.
pub(crate) fn now_serving(key: &str, root: u32, active: &Rc<Active>) {
    SERVING.with(|s| {
        let mut s = s.borrow_mut();
        match s.iter_mut().find(|(k, _, _)| k == key) {
            Some(entry) if entry.1 <= root => *entry = (key.to_string(), root, active.clone()),
            Some(_) => {}
            None => s.push((key.to_string(), root, active.clone())),
        }
    });
}

/// What a slice came to.
pub(crate) enum Sliced {
    Pending,
    Loaded(Box<Active>),
    Refused(TableError),
}

/// A table being loaded, and how its load goes (for the log line `make bench-e2e` reads).
pub(crate) struct Loading {
    load: SlicedLoad<Vec<u8>>,
    slices: u32,
    /// Nanoseconds in slices, and the longest slice with what it began with
    /// (`SlicedLoad::phase`).
    busy: u64,
    longest: (u64, &'static str),
    began: u64,
    pub(crate) memory_before: u64,
}

impl Loading {
    pub(crate) fn new(bytes: Vec<u8>, began: u64) -> Self {
        Loading {
            load: SlicedLoad::new(bytes),
            slices: 0,
            busy: 0,
            longest: (0, ""),
            began,
            memory_before: memory_bytes(),
        }
    }

    /// One slice: about [`SLICE`] of work, then back to serving.
    pub(crate) fn slice(&mut self, host: &impl Host) -> Sliced {
        let start = host.now_nanos();
        let at = self.load.phase();
        let deadline = start.saturating_add(SLICE.as_nanos() as u64);
        let mut pieces = 0u32;
        let mut more = || {
            pieces += 1;
            pieces % PIECES_PER_LOOK != 0 || host.now_nanos() < deadline
        };
        let outcome = self.load.step(&mut more);
        let spent = host.now_nanos().saturating_sub(start);
        self.slices += 1;
        self.busy += spent;
        if spent >= self.longest.0 {
            self.longest = (spent, at);
        }
        match outcome {
            Some(Ok(table)) => Sliced::Loaded(Box::new(Active::new(table))),
            Some(Err(e)) => Sliced::Refused(e),
            None => Sliced::Pending,
        }
    }

    /// How the load went, as of `now`.
    pub(crate) fn report(&self, now: u64) -> String {
        let ms = |nanos: u64| nanos / 1_000_000;
        format!(
            "in {} slices, {} ms of work, longest slice {} ms ({}), while the previous table served; in {} ms",
            self.slices,
            ms(self.busy),
            ms(self.longest.0),
            self.longest.1,
            ms(now.saturating_sub(self.began))
        )
    }
}
