//! Placeholder until the validation branch lands.
use crate::config::Bundle;
use crate::diag::Diagnostics;

pub fn validate(_bundle: &Bundle) -> Diagnostics {
    Diagnostics::default()
}
