//! The collection config file (`collection.json`): format version, dimension, metric and
//! the collection's uid.
//!
//! ```json
//! {"formatVersion":3,"dimension":384,"metric":"cosine","uid":2761358149}
//! ```
//!
//! JSON, so a person can read it; written once, atomically, when the collection is created.

use super::DecodeError;
use crate::types::{Metric, DIMENSION_MAX};

/// The collection layout this build writes and the newest it reads. Format 2 added
/// payloads (the payload log, its snapshot, and log ops 3 and 4); format 3 added the uid
/// (in this file and in every other file's header). An older collection is upgraded when
/// it is opened.
pub const COLLECTION_FORMAT_VERSION: u32 = 3;
/// The first format with payloads: an older collection gets an empty payload log.
pub const PAYLOADS_FORMAT_VERSION: u32 = 2;
/// Largest config file keeldb will read.
pub const CONFIG_BYTES_MAX: usize = 4096;

/// A collection's fixed parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionConfig {
    /// Layout version of the collection's files.
    pub format_version: u32,
    /// Number of f32 components per vector, 1 to [`DIMENSION_MAX`].
    pub dimension: u32,
    /// How distances are measured.
    pub metric: Metric,
    /// Random, nonzero, chosen when the collection is created (or upgraded to format 3) and
    /// written into every file's header, so that a file of another collection put in this
    /// one's directory is refused rather than read. 0: none (a config before format 3), and
    /// a file whose header says 0 predates it too.
    #[serde(default)]
    pub uid: u32,
}

/// A new collection uid: random (std's hash keys are seeded from the OS) and nonzero.
pub fn new_uid() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let uid = hasher.finish() as u32;
        if uid != 0 {
            return uid;
        }
    }
}

/// Encodes a config as JSON text.
pub fn encode(config: &CollectionConfig) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(config).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The `formatVersion` of a config, read while ignoring every other field, or `None` when
/// the bytes are not a JSON object with a u32 `formatVersion`. Lets the caller refuse a newer
/// config as such even when its other fields are ones this build cannot parse.
pub fn peek_format_version(bytes: &[u8]) -> Option<u32> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Versioned {
        format_version: u32,
    }
    if bytes.len() > CONFIG_BYTES_MAX {
        return None;
    }
    serde_json::from_slice::<Versioned>(bytes)
        .ok()
        .map(|v| v.format_version)
}

/// Decodes config JSON. The version is returned as found, for the caller to refuse one it
/// does not support; every other field is checked here.
pub fn decode(bytes: &[u8]) -> Result<CollectionConfig, DecodeError> {
    if bytes.len() > CONFIG_BYTES_MAX {
        return Err(DecodeError::new(
            CONFIG_BYTES_MAX,
            "config file is too large",
        ));
    }
    let config: CollectionConfig = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::new(0, format!("invalid config JSON: {e}")))?;
    if config.format_version >= 3 && config.uid == 0 {
        // Format 3 always has one; a uid of 0 would turn every file's check off.
        return Err(DecodeError::new(0, "a format-3 config needs a nonzero uid"));
    }
    if config.dimension == 0 || config.dimension > DIMENSION_MAX {
        return Err(DecodeError::new(
            0,
            format!(
                "dimension {} is outside 1..={DIMENSION_MAX}",
                config.dimension
            ),
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_junk() {
        let c = CollectionConfig {
            format_version: 3,
            dimension: 3,
            metric: Metric::Euclidean,
            uid: 77,
        };
        assert_eq!(decode(&encode(&c)), Ok(c));
        // Before format 3 there was no uid: it reads as 0.
        let old = b"{\"formatVersion\":2,\"dimension\":3,\"metric\":\"dot\"}";
        assert_eq!(decode(old).map(|c| c.uid), Ok(0));
        let no_uid = b"{\"formatVersion\":3,\"dimension\":3,\"metric\":\"dot\"}";
        assert!(decode(no_uid).is_err(), "format 3 without a uid");
        assert_ne!(new_uid(), 0);
        assert_ne!(
            new_uid(),
            new_uid(),
            "two collections, two uids (1 in 2^32 to fail)"
        );
        for junk in [
            &b""[..],
            b"{}",
            b"{\"formatVersion\":1,\"dimension\":0,\"metric\":\"dot\"}",
            b"{\"formatVersion\":1,\"dimension\":3,\"metric\":\"manhattan\"}",
            b"{\"formatVersion\":1,\"dimension\":3,\"metric\":\"dot\",\"x\":1}",
        ] {
            assert!(decode(junk).is_err(), "{}", String::from_utf8_lossy(junk));
        }
    }
}
