//! Payloads are JSON text, stored as given: this module checks them against the limits and
//! resolves a shallow merge into a whole payload.
//!
//! Pure: no I/O. Every check runs before a payload is logged, so a payload keeldb stored is
//! always valid JSON of at most [`PAYLOAD_BYTES_MAX`] bytes and [`PAYLOAD_DEPTH_MAX`] levels.

use crate::types::{PAYLOAD_BYTES_MAX, PAYLOAD_DEPTH_MAX};

/// Checks that `bytes` is one JSON value (UTF-8, surrounding whitespace allowed) within the
/// size and depth limits. The depth is measured before the text is parsed, so a hostile
/// payload nested a million levels deep is refused without recursing into it.
pub fn validate_payload(bytes: &[u8]) -> Result<(), String> {
    check_size(bytes)?;
    let depth = nesting_depth(bytes, PAYLOAD_DEPTH_MAX + 1);
    if depth > PAYLOAD_DEPTH_MAX {
        return Err(format!(
            "payload nests more than {PAYLOAD_DEPTH_MAX} levels of arrays and objects"
        ));
    }
    // serde_json skips over ignored strings without checking their UTF-8.
    let text = std::str::from_utf8(bytes).map_err(|e| format!("payload is not UTF-8: {e}"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| format!("payload is not valid JSON: {e}"))
}

/// How a payload text handed to a write was made, which decides how much of
/// [`validate_payload`] it still needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadText {
    /// Any bytes: checked in full (size, nesting, UTF-8, JSON syntax).
    Unchecked,
    /// Written by a JSON serializer from a value whose nesting the caller checked (the Node
    /// binding: `JSON.stringify` after lib/index.ts's payload check), so it is JSON within
    /// the depth limit by construction: only its size and UTF-8 are checked. Parsing it
    /// again cost about 0.6 µs of the JS thread per ~300-byte payload.
    Serialized,
}

/// [`validate_payload`], or its size and UTF-8 checks only for [`PayloadText::Serialized`].
pub fn check_payload(bytes: &[u8], text: PayloadText) -> Result<(), String> {
    match text {
        PayloadText::Unchecked => validate_payload(bytes),
        PayloadText::Serialized => {
            check_size(bytes)?;
            std::str::from_utf8(bytes)
                .map(|_| ())
                .map_err(|e| format!("payload is not UTF-8: {e}"))
        }
    }
}

fn check_size(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("payload is empty: pass a JSON value, or none".to_owned());
    }
    if bytes.len() > PAYLOAD_BYTES_MAX {
        return Err(format!(
            "payload is {} bytes of JSON, the limit is {PAYLOAD_BYTES_MAX}",
            bytes.len()
        ));
    }
    Ok(())
}

/// How deeply arrays and objects nest in `bytes`, counting brackets outside strings; stops
/// counting once `stop_at` is reached. Meaningful for valid JSON only (invalid text is
/// refused by the parser anyway).
pub fn nesting_depth(bytes: &[u8], stop_at: usize) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest >= stop_at {
                    return deepest;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether `bytes` (valid JSON) is an object: its first non-whitespace byte is `{`.
pub fn is_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A shallow merge, as `Object.assign({}, current, patch)`: every key of `patch` replaces or
/// adds that key of `current`, in place, and keys it does not name are kept. `current` is
/// the stored payload (`None`: the record has none, which merges as `{}`); both must be
/// objects. Returns the merged JSON text, checked against the limits.
pub fn merge_objects(current: Option<&[u8]>, patch: &[u8]) -> Result<Vec<u8>, String> {
    type Object = serde_json::Map<String, serde_json::Value>;
    let patch: Object = serde_json::from_slice(patch)
        .map_err(|_| "a merge patch must be a JSON object".to_owned())?;
    let mut merged: Object = match current {
        None => Object::new(),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|_| {
            "the stored payload is not a JSON object, so it cannot be merged into; replace it with updatePayload"
                .to_owned()
        })?,
    };
    for (key, value) in patch {
        // With serde_json's `preserve_order`, replacing a key keeps its position.
        merged.insert(key, value);
    }
    let text = serde_json::to_vec(&merged).map_err(|e| format!("merged payload: {e}"))?;
    validate_payload(&text).map_err(|e| format!("merged {e}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_payloads_pass_and_junk_is_refused() {
        for ok in [
            &b"null"[..],
            b"0",
            b"-1.5e300",
            b"\"x\"",
            b" [1, {\"a\": [true, false]}] ",
            b"{\"k\":\"]]]}}}\\\"[[\"}",
        ] {
            assert_eq!(
                validate_payload(ok),
                Ok(()),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b""[..],
            b"{",
            b"nul",
            b"[1,]",
            b"{} {}",
            b"\"\xff\"",
            b"NaN",
        ] {
            assert!(
                validate_payload(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_merge_writes_back_the_numbers_it_read() {
        // Doubles whose shortest text a best-effort parser rounds to a neighbour.
        let current = br#"{"score":0.9104448494177477,"n":-1.5e300}"#;
        let merged =
            merge_objects(Some(current), br#"{"other":0.12034211419755003}"#).expect("merge");
        assert_eq!(
            String::from_utf8_lossy(&merged),
            r#"{"score":0.9104448494177477,"n":-1.5e+300,"other":0.12034211419755003}"#
        );
    }

    #[test]
    fn depth_is_counted_outside_strings_and_capped() {
        assert_eq!(nesting_depth(b"1", 100), 0);
        assert_eq!(nesting_depth(b"{\"a\":[[]],\"b\":{}}", 100), 3);
        assert_eq!(nesting_depth(b"[\"[[[[\\\"[[\"]", 100), 1);
        let at_limit = format!(
            "{}{}",
            "[".repeat(PAYLOAD_DEPTH_MAX),
            "]".repeat(PAYLOAD_DEPTH_MAX)
        );
        assert_eq!(validate_payload(at_limit.as_bytes()), Ok(()));
        let deep = "[".repeat(1_000_000);
        let err = validate_payload(deep.as_bytes()).expect_err("too deep");
        assert!(err.contains("levels"), "{err}");
    }

    #[test]
    fn serialized_text_is_checked_for_size_and_utf8_only() {
        let ok = br#"{"a":[1,2]}"#;
        assert_eq!(check_payload(ok, PayloadText::Serialized), Ok(()));
        assert_eq!(check_payload(ok, PayloadText::Unchecked), Ok(()));
        assert!(check_payload(b"", PayloadText::Serialized).is_err());
        assert!(check_payload(b"\"\xff\"", PayloadText::Serialized)
            .expect_err("not UTF-8")
            .contains("UTF-8"));
        let big = vec![b'1'; PAYLOAD_BYTES_MAX + 1];
        assert!(check_payload(&big, PayloadText::Serialized).is_err());
        // Not parsed: a serializer never writes this, and only the full check refuses it.
        assert_eq!(check_payload(b"{", PayloadText::Serialized), Ok(()));
        assert!(check_payload(b"{", PayloadText::Unchecked).is_err());
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let big = vec![b' '; PAYLOAD_BYTES_MAX + 1];
        assert!(validate_payload(&big).expect_err("big").contains("limit"));
    }

    #[test]
    fn merges_are_shallow_and_keep_key_order() {
        let merged = merge_objects(
            Some(br#"{"a":1,"b":{"x":1},"c":3}"#),
            br#"{"b":{"y":2},"d":null}"#,
        )
        .expect("merge");
        assert_eq!(merged, br#"{"a":1,"b":{"y":2},"c":3,"d":null}"#.to_vec());
        assert_eq!(
            merge_objects(None, br#"{"a":1}"#),
            Ok(br#"{"a":1}"#.to_vec())
        );
        assert!(merge_objects(Some(b"[1]"), b"{}").is_err());
        assert!(merge_objects(Some(b"{}"), b"[1]").is_err());
        assert!(is_object(b" \n{}") && !is_object(b"[]"));
    }
}
