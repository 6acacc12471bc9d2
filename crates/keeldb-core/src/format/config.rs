//! The collection config file (`collection.json`): format version, dimension, metric.
//!
//! ```json
//! {"formatVersion":1,"dimension":384,"metric":"cosine"}
//! ```
//!
//! JSON, so a person can read it; written once, atomically, when the collection is created.

use super::DecodeError;
use crate::types::{Metric, DIMENSION_MAX};

/// The collection layout this build writes and the newest it reads. Format 2 added
/// payloads (the payload log, its snapshot, and log ops 3 and 4); a format-1 collection is
/// upgraded when it is opened.
pub const COLLECTION_FORMAT_VERSION: u32 = 2;
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
            format_version: 1,
            dimension: 3,
            metric: Metric::Euclidean,
        };
        assert_eq!(decode(&encode(&c)), Ok(c));
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
