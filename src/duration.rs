//! Durations as Istio accepts them: Go `time.ParseDuration` strings ("5s", "100ms", "1.5s",
//! "1m", "1h30m"), which is what protobuf-JSON `Duration` fields take in Istio CRDs.

use std::time::Duration;

/// Parses a Go-style duration. Negative durations and bare numbers are rejected, the way
/// Istio's validation rejects them.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total_nanos: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let number = &t[start..i];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!(
                "invalid duration {s:?}: expected a number followed by a unit (e.g. \"5s\", \"100ms\")"
            ));
        }
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit_nanos: u128 = match &t[ustart..i] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(format!("invalid duration {s:?}: missing unit (use ms, s, m or h)")),
            other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| format!("invalid duration {s:?}: number out of range"))?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(|| format!("invalid duration {s:?}: out of range"))?;
        // The fraction is applied digit by digit so "1.5s" is exact, with no float rounding.
        let mut scale = unit_nanos;
        for d in frac_part.bytes() {
            scale /= 10;
            nanos += u128::from(d - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(|| format!("invalid duration {s:?}: out of range"))?;
    }
    let secs =
        u64::try_from(total_nanos / 1_000_000_000).map_err(|_| format!("invalid duration {s:?}: out of range"))?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// Whole milliseconds, the unit of Envoy's timeout headers.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn accepts_the_forms_istio_users_write() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn rejects_numbers_without_units_and_garbage() {
        assert!(parse("5").is_err());
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("5 seconds").is_err());
        assert!(parse("1.2.3s").is_err());
        assert!(parse("5d").is_err());
    }
}
