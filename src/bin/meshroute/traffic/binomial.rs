//! Acceptance intervals for shares of requests: if each of `n` requests independently lands in a
//! bucket with probability `p`, the count is Binomial(n, p), and a test accepts the counts whose
//! two tails together have probability at most `alpha` — so a correct configuration fails with
//! probability ≤ alpha, and a wrong one fails as soon as its share is far enough from `p` for `n`.

/// `[lo, hi]`: P(X < lo) ≤ alpha/2 and P(X > hi) ≤ alpha/2 for X ~ Binomial(n, p).
pub fn interval(n: u32, p: f64, alpha: f64) -> (u32, u32) {
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    let pmf: Vec<f64> = (0..=n).map(|k| ln_pmf(n, k, p).exp()).collect();
    let half = alpha / 2.0;
    let mut lo = 0;
    let mut tail = 0.0;
    for (k, q) in pmf.iter().enumerate() {
        if tail + q > half {
            lo = k as u32;
            break;
        }
        tail += q;
    }
    let mut hi = n;
    let mut tail = 0.0;
    for (k, q) in pmf.iter().enumerate().rev() {
        if tail + q > half {
            hi = k as u32;
            break;
        }
        tail += q;
    }
    (lo, hi)
}

fn ln_pmf(n: u32, k: u32, p: f64) -> f64 {
    ln_choose(n, k) + f64::from(k) * p.ln() + f64::from(n - k) * (1.0 - p).ln()
}

fn ln_choose(n: u32, k: u32) -> f64 {
    let k = k.min(n - k);
    (0..k).map(|i| (f64::from(n - i)).ln() - (f64::from(i + 1)).ln()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_shares_accept_only_the_certain_count() {
        assert_eq!(interval(100, 0.0, 1e-6), (0, 0));
        assert_eq!(interval(100, 1.0, 1e-6), (100, 100));
    }

    #[test]
    fn an_80_20_split_over_200_requests_rejects_50_50() {
        let (lo, hi) = interval(200, 0.8, 1e-6);
        assert!(lo > 100 && lo < 160 && hi > 160 && hi < 200, "{lo}..{hi}");
        assert!(!(lo..=hi).contains(&100));
    }

    #[test]
    fn the_interval_holds_its_false_failure_bound() {
        // The two excluded tails together weigh at most alpha.
        for (n, p) in [(50, 0.1), (200, 0.5), (1000, 0.05)] {
            let (lo, hi) = interval(n, p, 1e-3);
            let outside: f64 = (0..=n).filter(|k| *k < lo || *k > hi).map(|k| ln_pmf(n, k, p).exp()).sum();
            assert!(outside <= 1e-3, "n={n} p={p}: {outside}");
            // And it is tight: widening by one on either side would not be needed.
            let inside_lo = ln_pmf(n, lo, p).exp();
            assert!(inside_lo > 0.0);
        }
    }
}
