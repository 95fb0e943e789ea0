//! The content hash of a revision: FNV-1a (64 bit) of the configuration's canonical JSON
//! (serde_json sorts object keys). It detects change and hand edits, it is not a security
//! measure (nobody gains anything by forging a revision in their own state directory).

use serde_json::Value;

pub fn content_hash(config: &Value) -> String {
    let text = config.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_configurations_hash_equal_and_any_change_shows() {
        let a = json!({"resources": [{"kind": "VirtualService"}], "settings": {"namespace": "x"}});
        let b = json!({"settings": {"namespace": "x"}, "resources": [{"kind": "VirtualService"}]});
        assert_eq!(content_hash(&a), content_hash(&b), "key order does not matter");
        let c = json!({"settings": {"namespace": "y"}, "resources": [{"kind": "VirtualService"}]});
        assert_ne!(content_hash(&a), content_hash(&c));
        assert_eq!(content_hash(&a).len(), 16);
    }
}
