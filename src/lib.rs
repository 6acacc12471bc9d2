//! Node.js binding of keeldb. Placeholder: the real binding replaces this.
#![deny(clippy::unwrap_used)]

use napi_derive::napi;

/// Version of the native addon (the Cargo package version).
#[napi]
pub fn native_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
