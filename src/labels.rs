//! Label selectors over workloads (Pods, WorkloadEntries): whether a selector selects a label
//! set, and an index that answers "which workloads of this namespace does this selector select"
//! by reading only the workloads that carry the selector's first label. Checking every Service,
//! subset, Sidecar or ServiceEntry selector against the workloads then costs what they select,
//! not selectors × workloads (linear in the input).

use std::collections::{BTreeMap, HashMap};

/// Kubernetes' equality-based selector: every pair of `selector` is in `labels` (an empty
/// selector selects everything).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Items (`T`, e.g. a workload or its position) by namespace and by (namespace, label key,
/// label value), in input order.
pub struct LabelIndex<'a, T> {
    items: Vec<(&'a BTreeMap<String, String>, T)>,
    by_ns: HashMap<&'a str, Vec<usize>>,
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
}

impl<'a, T: Copy> LabelIndex<'a, T> {
    /// From `(namespace, labels, item)` triples.
    pub fn new(items: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>, T)>) -> Self {
        let mut index = LabelIndex { items: Vec::new(), by_ns: HashMap::new(), by_label: HashMap::new() };
        for (i, (ns, labels, item)) in items.into_iter().enumerate() {
            index.by_ns.entry(ns).or_default().push(i);
            for (k, v) in labels {
                index.by_label.entry((ns, k.as_str(), v.as_str())).or_default().push(i);
            }
            index.items.push((labels, item));
        }
        index
    }

    /// Whether any item lives in `ns`.
    pub fn any_in(&self, ns: &str) -> bool {
        self.by_ns.contains_key(ns)
    }

    /// The items of `ns` that `selector` selects, in input order.
    pub fn selected<'s>(&'s self, ns: &'s str, selector: &'s BTreeMap<String, String>) -> impl Iterator<Item = T> + 's {
        let ids = match selector.iter().next() {
            Some((k, v)) => self.by_label.get(&(ns, k.as_str(), v.as_str())),
            None => self.by_ns.get(ns),
        };
        ids.into_iter()
            .flatten()
            .filter_map(|&i| self.items.get(i))
            .filter(move |(labels, _)| selects(selector, labels))
            .map(|(_, item)| *item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_selector_reads_its_namespace_and_keeps_input_order() {
        let (a, b, c) =
            (labels(&[("app", "r"), ("v", "1")]), labels(&[("app", "r"), ("v", "2")]), labels(&[("app", "r")]));
        let index = LabelIndex::new([("ns", &a, 0), ("other", &a, 1), ("ns", &b, 2), ("ns", &c, 3)]);
        let got = |ns: &str, sel: &BTreeMap<String, String>| index.selected(ns, sel).collect::<Vec<_>>();
        assert_eq!(got("ns", &labels(&[("app", "r")])), [0, 2, 3]);
        // The first label narrows the candidates; the others must match too.
        assert_eq!(got("ns", &labels(&[("app", "r"), ("v", "2")])), [2]);
        assert_eq!(got("ns", &labels(&[("v", "1")])), [0]);
        assert_eq!(got("ns", &labels(&[])), [0, 2, 3], "an empty selector selects the whole namespace");
        assert_eq!(got("ns", &labels(&[("app", "x")])), Vec::<i32>::new());
        assert_eq!(got("none", &labels(&[])), Vec::<i32>::new());
        assert!(index.any_in("other") && !index.any_in("none"));
    }
}
