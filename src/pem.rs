//! Just enough of base64, PEM and X.509 DER to tell whether a Gateway credential holds a
//! certificate and when it is valid (istiod `xds.ValidateCertificate`: PEM decodes, certificates
//! parse, `NotBefore <= now <= NotAfter`). No signature or chain checks: Istio makes none here.

/// Standard base64 (with or without padding; whitespace ignored), as Kubernetes `data` holds.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' | b'\n' | b'\r' | b' ' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The DER bytes of every `CERTIFICATE` block, in order.
pub fn pem_certificates(pem: &[u8]) -> Option<Vec<Vec<u8>>> {
    let text = std::str::from_utf8(pem).ok()?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + "-----BEGIN CERTIFICATE-----".len()..];
        let end = body.find("-----END CERTIFICATE-----")?;
        out.push(base64_decode(&body[..end])?);
        rest = &body[end..];
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// One DER element: (tag, content, rest).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `(notBefore, notAfter)` of a DER certificate, seconds since the Unix epoch.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (0x30, cert, _) = element(der)? else { return None };
    let (0x30, tbs, _) = element(cert)? else { return None };
    let (tag, _, mut rest) = element(tbs)?;
    if tag == 0xa0 {
        // Explicit version; the serial number follows.
        rest = element(rest)?.2;
    }
    let rest = element(rest)?.2; // signature algorithm
    let rest = element(rest)?.2; // issuer
    let (0x30, validity, _) = element(rest)? else { return None };
    let (t1, nb, after) = element(validity)?;
    let (t2, na, _) = element(after)?;
    Some((time(t1, nb)?, time(t2, na)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, s: &[u8]) -> Option<i64> {
    let digits = |b: &[u8]| -> Option<i64> {
        b.iter().try_fold(0i64, |a, c| c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0')))
    };
    let (year, rest) = match tag {
        0x17 if s.len() >= 12 => {
            let yy = digits(&s[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        0x18 if s.len() >= 14 => (digits(&s[..4])?, &s[4..]),
        _ => return None,
    };
    let f = |i: usize| digits(rest.get(i..i + 2)?);
    let (month, day, hour, min, sec) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the Unix epoch.
pub fn format_time(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Inverse of days_from_civil (Howard Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Why a certificate chain (PEM) is not usable at `now`, if it is not.
pub fn problem(pem: &[u8], now: Option<i64>) -> Option<String> {
    let Some(certs) = pem_certificates(pem) else {
        return Some("is not a PEM certificate (no -----BEGIN CERTIFICATE----- block that decodes)".into());
    };
    for (i, der) in certs.iter().enumerate() {
        let Some((nb, na)) = validity(der) else {
            return Some(format!("certificate #{i} does not parse as X.509"));
        };
        match now {
            Some(t) if t > na => return Some(format!("certificate #{i} expired at {}", format_time(na))),
            Some(t) if t < nb => return Some(format!("certificate #{i} is not valid before {}", format_time(nb))),
            _ => {}
        }
    }
    None
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn base64_and_dates() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("a*"), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(time(0x17, b"000301000000Z"), Some(11_017 * 86_400));
        assert_eq!(time(0x18, b"20000301000001Z"), Some(11_017 * 86_400 + 1));
        assert_eq!(pem_certificates(b"not pem"), None);
        assert_eq!(format_time(11_017 * 86_400 + 3_661), "2000-03-01T01:01:01Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert!(problem(b"junk", None).is_some_and(|p| p.contains("not a PEM")));
    }
}
