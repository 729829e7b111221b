//! Whether two JSON texts are the same document, for telling a retry of a request from another request under the
//! same idempotency key. Formatting may differ (whitespace, member order, string escapes); values may not, and
//! a value is compared as written wherever reading it could lose something: numbers are compared as text (two
//! integers past 2^64, or two decimals past a float's precision, would read as the same float), and an object
//! that repeats a member is compared byte for byte (receivers disagree on which of the two counts).

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Deeper nesting is compared byte for byte: each level reads its text again, so the cost is bounded.
const MAX_DEPTH: usize = 32;

pub fn same_json(a: &RawValue, b: &RawValue) -> bool {
    same(a, b, 0)
}

fn same(a: &RawValue, b: &RawValue, depth: usize) -> bool {
    let (a, b) = (a.get(), b.get());
    if a == b {
        return true;
    }
    // Containers past the bound are compared by their text (just done); strings in the last container are not.
    let opens_past_bound = depth >= MAX_DEPTH;
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(b'{' | b'['), _) if opens_past_bound => false,
        (Some(b'{'), Some(b'{')) => {
            let (Some(mut x), Some(mut y)) = (members(a), members(b)) else { return false };
            x.sort_by(|p, q| p.0.cmp(&q.0));
            y.sort_by(|p, q| p.0.cmp(&q.0));
            let repeats = |members: &[(String, &RawValue)]| members.windows(2).any(|pair| pair[0].0 == pair[1].0);
            x.len() == y.len()
                && !repeats(&x)
                && !repeats(&y)
                && x.iter().zip(&y).all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy, depth + 1))
        }
        (Some(b'['), Some(b'[')) => match (elements(a), elements(b)) {
            (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| same(p, q, depth + 1)),
            _ => false,
        },
        (Some(b'"'), Some(b'"')) => match (serde_json::from_str::<String>(a), serde_json::from_str::<String>(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
        // Numbers, `true`, `false` and `null` whose text differs.
        _ => false,
    }
}

fn elements(text: &str) -> Option<Vec<&RawValue>> {
    serde_json::from_str(text).ok()
}

/// An object's members in their order, repeats included (a map would keep one of them).
fn members(text: &str) -> Option<Vec<(String, &RawValue)>> {
    struct Members;

    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, &'de RawValue)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                members.push(member);
            }
            Ok(members)
        }
    }

    let mut reader = serde_json::Deserializer::from_str(text);
    let members = reader.deserialize_map(Members).ok()?;
    reader.end().ok()?;
    Some(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_text(a: &str, b: &str) -> bool {
        let raw = |text: &str| RawValue::from_string(text.to_string()).unwrap();
        same_json(&raw(a), &raw(b))
    }

    #[test]
    fn formatting_member_order_and_escapes_do_not_matter() {
        let first = r#"{"id": 7, "lines": [{"sku": "a", "qty": 2}], "note": "é", "ok": true, "gone": null}"#;
        for same in [
            first,
            r#"{"gone":null,"ok":true,"note":"\u00e9","lines":[ {"qty":2,"sku":"a"} ],"id":7}"#,
            "{\n  \"id\" : 7 ,\n  \"lines\" : [ { \"sku\" : \"\\u0061\" , \"qty\" : 2 } ],\n  \"note\" : \"é\", \"ok\": true, \"gone\": null\n}",
        ] {
            assert!(same_text(first, same), "{same}");
        }
    }

    #[test]
    fn any_other_value_differs() {
        let first = r#"{"id": 7, "lines": [{"sku": "a"}], "note": "é"}"#;
        for different in [
            r#"{"id": 8, "lines": [{"sku": "a"}], "note": "é"}"#,
            r#"{"id": 7, "lines": [{"sku": "a"}], "note": "é", "extra": null}"#,
            r#"{"id": 7, "lines": [{"sku": "a"}, {"sku": "a"}], "note": "é"}"#,
            r#"{"id": 7, "lines": [{"sku": "b"}], "note": "é"}"#,
            r#"{"id": "7", "lines": [{"sku": "a"}], "note": "é"}"#,
            r#"{"id": 7, "lines": {"sku": "a"}, "note": "é"}"#,
            r#"{"ID": 7, "lines": [{"sku": "a"}], "note": "é"}"#,
        ] {
            assert!(!same_text(first, different), "{different}");
        }
    }

    /// Each pair reads as the same f64, or the same map, and would pass for a retry if read as a
    /// `serde_json::Value`.
    #[test]
    fn numbers_and_repeated_members_are_compared_as_written() {
        for (a, b) in [
            (r#"{"n": 12345678901234567890123}"#, r#"{"n": 12345678901234567890124}"#),
            (r#"{"n": 18446744073709551616}"#, r#"{"n": 18446744073709551617}"#),
            (r#"{"n": -9223372036854775809}"#, r#"{"n": -9223372036854775810}"#),
            (r#"{"n": 0.1}"#, r#"{"n": 0.10000000000000000001}"#),
            (r#"{"n": 1234567890.12345678901}"#, r#"{"n": 1234567890.12345678902}"#),
            (r#"{"n": 0.0}"#, r#"{"n": -0.0}"#),
            (r#"{"n": 1e2}"#, r#"{"n": 100.0}"#),
            (r#"{"n": 1}"#, r#"{"n": 1.0}"#),
            (r#"{"a": 1, "a": 2}"#, r#"{"a": 2}"#),
            (r#"{"a": 1, "a": 2}"#, r#"{"a": 2, "a": 1}"#),
        ] {
            assert!(!same_text(a, b), "{a} vs {b}");
        }
        assert!(same_text(r#"{"a": 1, "a": 2}"#, r#"{"a": 1, "a": 2}"#), "identical text");
    }

    #[test]
    fn text_that_cannot_be_read_is_the_same_only_byte_for_byte() {
        // A lone surrogate: the same escape is the same text; another spelling of it cannot be decoded to compare.
        assert!(same_text(r#"{"s": "\ud800"}"#, r#"{ "s": "\ud800" }"#));
        assert!(!same_text(r#"{"s": "\ud800"}"#, r#"{"s": "\uD800"}"#));
        let deep = |spacing: &str| format!("{}1{}", format!("[{spacing}").repeat(40), "]".repeat(40));
        assert!(same_text(&deep(""), &deep("")));
        assert!(!same_text(&deep(""), &deep(" ")), "past the depth bound");
        // The bound's last container still decodes its strings.
        let at_bound = |s: &str| format!("{}\"{s}\"{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(same_text(&at_bound(r"\/"), &at_bound("/")));
        assert!(same_text(&at_bound(r"\u0041"), &at_bound("A")));
        let past_bound = |s: &str| format!("{}\"{s}\"{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!same_text(&past_bound(r"\/"), &past_bound("/")));
        let shallow = |spacing: &str| format!("{}1{}", format!("[{spacing}").repeat(10), "]".repeat(10));
        assert!(same_text(&shallow(""), &shallow(" ")));
    }
}
