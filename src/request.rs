//! What `decide` may look at in a request, and where its randomness comes from.
//!
//! Both are inputs so that decisions are reproducible in tests and the core never touches a host.

use std::borrow::Cow;

/// A read-only view of one HTTP request. Header names are asked for in lower case.
pub trait RequestView {
    fn method(&self) -> &str;
    fn scheme(&self) -> &str;
    /// `:authority` as sent, port included.
    fn authority(&self) -> &str;
    /// `:path` as sent, query string included.
    fn path(&self) -> &str;
    /// Every value of the header joined with `,` (Envoy's header matchers see exactly that);
    /// `None` when absent.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// A request: pseudo-headers apart, the rest as a list of (name, value) pairs. `Request` owns its
/// strings; [`RequestRef`] borrows them from the block the proxy filled (no copy and no
/// allocation per header on the path every request takes; a mirror copies what it sends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request<S = String> {
    pub method: S,
    pub scheme: S,
    pub authority: S,
    pub path: S,
    pub headers: Vec<(S, S)>,
}

/// A request borrowing from the proxy's header block; a value that was not UTF-8 is owned.
pub type RequestRef<'a> = Request<Cow<'a, str>>;

impl Request {
    pub fn new(method: &str, authority: &str, path: &str) -> Self {
        Request {
            method: method.into(),
            scheme: "http".into(),
            authority: authority.into(),
            path: path.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }
}

impl<S: AsRef<str> + Default> Request<S> {
    /// Builds a request from a header list as a proxy hands it over (pseudo-headers included).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (S, S)>) -> Self {
        let mut r = Request::default();
        for (k, v) in pairs {
            match k.as_ref() {
                ":method" => r.method = v,
                ":scheme" => r.scheme = v,
                ":authority" => r.authority = v,
                ":path" => r.path = v,
                _ => r.headers.push((k, v)),
            }
        }
        r
    }
}

impl<S: AsRef<str>> RequestView for Request<S> {
    fn method(&self) -> &str {
        self.method.as_ref()
    }
    fn scheme(&self) -> &str {
        self.scheme.as_ref()
    }
    fn authority(&self) -> &str {
        self.authority.as_ref()
    }
    fn path(&self) -> &str {
        self.path.as_ref()
    }
    /// Every value of the header joined with `,`; `host` is the authority.
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        if name == "host" {
            return Some(Cow::Borrowed(self.authority.as_ref()));
        }
        let mut found: Option<Cow<'_, str>> = None;
        for (k, v) in &self.headers {
            if k.as_ref().eq_ignore_ascii_case(name) {
                found = Some(match found {
                    None => Cow::Borrowed(v.as_ref()),
                    Some(prev) => Cow::Owned(format!("{prev},{}", v.as_ref())),
                });
            }
        }
        found
    }
}

/// A source of uniform random numbers.
pub trait Random {
    fn next_u64(&mut self) -> u64;

    /// Uniform in `0..bound` with no modulo bias (rejection sampling), so weighted choices are
    /// exact over the weight ratio. `bound` 0 yields 0.
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % bound;
            }
        }
    }

    /// True with probability `ppm` parts per million.
    fn chance(&mut self, ppm: u32) -> bool {
        match ppm {
            0 => false,
            p if p >= PPM => true,
            p => self.below(u64::from(PPM)) < u64::from(p),
        }
    }
}

pub const PPM: u32 = 1_000_000;

/// SplitMix64: tiny, fast and statistically good enough for traffic splitting; seeded from
/// outside so tests replay exactly.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl Random for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_request_reads_like_the_owned_one() {
        let pairs = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "reviews:9080"),
            (":path", "/r?x=1"),
            ("end-user", "jason"),
            ("x-b", "1"),
            ("X-B", "2"),
        ];
        let owned = Request::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let borrowed = RequestRef::from_pairs(pairs.iter().map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v))));
        let borrowed_headers: Vec<(String, String)> =
            borrowed.headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(borrowed_headers, owned.headers);
        for name in ["end-user", "x-b", "host", "absent", "END-USER"] {
            assert_eq!(borrowed.header(name), owned.header(name), "{name}");
        }
        assert_eq!(borrowed.header("x-b").as_deref(), Some("1,2"));
        assert_eq!(
            (borrowed.method(), borrowed.scheme(), borrowed.authority(), borrowed.path()),
            ("GET", "http", "reviews:9080", "/r?x=1")
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn repeated_headers_are_joined_with_commas() {
        let r = Request::new("GET", "a", "/").with_header("x-a", "1").with_header("X-A", "2");
        assert_eq!(r.header("x-a").as_deref(), Some("1,2"));
        assert_eq!(r.header("x-b"), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn chance_extremes_are_exact() {
        let mut r = SplitMix64(1);
        assert!((0..1000).all(|_| !r.chance(0)));
        assert!((0..1000).all(|_| r.chance(PPM)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn below_stays_in_range() {
        let mut r = SplitMix64(7);
        assert!((0..10_000).all(|_| r.below(3) < 3));
    }
}
