//! Diagnostics: every problem found in a configuration, errors and warnings apart, each naming
//! the resource and the field path so that a user can find it (the CLI adds file and line).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
    Info,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// All diagnostics of one load, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
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

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}
