//! Diagnostics: every problem found in a configuration, errors and warnings apart, each naming
//! the resource and the field path so that a user can find it (the CLI adds file and line).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error = 0,
    Warning = 1,
    Info = 2,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Which resource a diagnostic is about. `index` is the position of the resource in the input
/// (after lists are flattened), so a front end that knows where each resource came from (file,
/// line) can point at it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    pub index: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub severity: Severity,
    /// An `istioctl analyze` code (e.g. `IST0101`) where the finding is one users know by it.
    pub code: Option<&'static str>,
    pub resource: Option<ResourceRef>,
    /// Field path inside the resource, e.g. `spec.http[1].route[0].destination.subset`;
    /// empty when the diagnostic is about the whole resource or input.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(resource: Option<ResourceRef>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, code: None, resource, path: path.into(), message: message.into() }
    }

    pub fn warning(resource: Option<ResourceRef>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, code: None, resource, path: path.into(), message: message.into() }
    }

    pub fn info(resource: Option<ResourceRef>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Info, code: None, resource, path: path.into(), message: message.into() }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `error: VirtualService default/reviews: spec.http[0].timeout: ... (IST0101)`
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity.as_str())?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(code) = self.code {
            write!(f, " ({code})")?;
        }
        Ok(())
    }
}

/// How many diagnostics of each severity are kept: a configuration with 100,000 bad regexes
/// must not make the CLI print (or the filter log) 100,000 lines, nor hold them all. Beyond this
/// only a count is kept (`Diagnostics::omitted`).
pub const MAX_PER_SEVERITY: usize = 1000;

/// All diagnostics of one load, in the order found: the first [`MAX_PER_SEVERITY`] of each
/// severity, and a count of the rest. Identical findings are kept once (as istioctl's
/// `SortedDedupedCopy`), so a repeated finding never hides a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
///
/// Read the list through `.0` or the iterators; add only with [`Diagnostics::push`].
pub struct Diagnostics(pub Vec<Diagnostic>, Overflow);

/// The bookkeeping behind the cap and the de-duplication, both linear in the findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Overflow {
    /// Kept diagnostics by hash, as positions in the list (compared in full on a hash hit).
    kept: HashMap<u64, Vec<usize>>,
    /// Hashes of the diagnostics beyond the cap: they are only counted, so a 64-bit hash stands
    /// in for the diagnostic (two distinct findings with one hash would count once).
    dropped: HashSet<u64>,
    /// Kept and omitted diagnostics per severity (error, warning, info).
    kept_per_severity: [usize; 3],
    omitted: [usize; 3],
}

impl Diagnostics {
    /// Adds a finding, unless the same one is already there or its severity is at the cap (then
    /// it is counted in [`Diagnostics::omitted`]).
    pub fn push(&mut self, d: Diagnostic) {
        let hash = {
            // SipHash with fixed keys: the same finding always hashes the same.
            let mut h = std::hash::DefaultHasher::new();
            d.hash(&mut h);
            h.finish()
        };
        let Diagnostics(list, o) = self;
        if o.kept.get(&hash).is_some_and(|at| at.iter().any(|&i| list.get(i) == Some(&d))) {
            return;
        }
        let sev = d.severity as usize;
        if o.kept_per_severity[sev] >= MAX_PER_SEVERITY {
            if o.dropped.insert(hash) {
                o.omitted[sev] += 1;
            }
            return;
        }
        o.kept_per_severity[sev] += 1;
        o.kept.entry(hash).or_default().push(list.len());
        list.push(d);
    }

    /// Adds every finding of `other` (in order, under the same cap), and its omitted counts.
    pub fn append(&mut self, other: Diagnostics) {
        let Diagnostics(list, o) = other;
        for d in list {
            self.push(d);
        }
        for (mine, theirs) in self.1.omitted.iter_mut().zip(o.omitted) {
            *mine += theirs;
        }
    }

    /// How many findings of this severity were left out beyond the cap.
    pub fn omitted(&self, severity: Severity) -> usize {
        self.1.omitted[severity as usize]
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error) || self.omitted(Severity::Error) > 0
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Diagnostics {
    /// `42 more errors and 7 more warnings not shown (the first 1000 of each severity are
    /// kept)`, or `None` when nothing was left out.
    pub fn omitted_summary(&self) -> Option<String> {
        let parts: Vec<String> = [Severity::Error, Severity::Warning, Severity::Info]
            .into_iter()
            .filter(|s| self.omitted(*s) > 0)
            .map(|s| {
                let n = self.omitted(s);
                let plural = if n == 1 { "" } else { "s" };
                format!("{n} more {}{plural}", s.as_str())
            })
            .collect();
        (!parts.is_empty()).then(|| {
            format!("{} not shown (the first {MAX_PER_SEVERITY} of each severity are kept)", parts.join(" and "))
        })
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        if let Some(rest) = self.omitted_summary() {
            writeln!(f, "{rest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(severity: Severity, i: usize) -> Diagnostic {
        Diagnostic { severity, code: None, resource: None, path: format!("spec.http[{i}]"), message: "bad".into() }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn identical_findings_are_kept_once_in_first_order() {
        let mut d = Diagnostics::default();
        for i in [2, 0, 2, 1, 0] {
            d.push(finding(Severity::Warning, i));
        }
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["spec.http[2]", "spec.http[0]", "spec.http[1]"]);
        assert_eq!(d.omitted_summary(), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn each_severity_keeps_its_first_findings_and_counts_the_rest() {
        let mut d = Diagnostics::default();
        for i in 0..MAX_PER_SEVERITY + 5 {
            d.push(finding(Severity::Error, i));
            // Repeats beyond the cap are not counted twice.
            d.push(finding(Severity::Error, i));
        }
        // Warnings are not crowded out by the errors before them.
        d.push(finding(Severity::Warning, 0));
        assert_eq!(d.errors().count(), MAX_PER_SEVERITY);
        assert_eq!(d.errors().last().map(|e| e.path.as_str()), Some("spec.http[999]"));
        assert_eq!(d.omitted(Severity::Error), 5);
        assert_eq!(d.warnings().count(), 1);
        assert!(d.has_errors());
        let summary = d.omitted_summary().unwrap();
        assert_eq!(summary, "5 more errors not shown (the first 1000 of each severity are kept)");
        assert!(d.to_string().ends_with(&format!("{summary}\n")));

        let mut total = Diagnostics::default();
        total.push(finding(Severity::Info, 0));
        total.append(d);
        assert_eq!(total.omitted(Severity::Error), 5);
        assert_eq!(total.len(), 1 + MAX_PER_SEVERITY + 1);
    }
}
