//! Conversions at the border: core errors to napi errors, JavaScript ids and option strings
//! to core types.

use keeldb_core::{Durability, Error, Id};
use napi::bindgen_prelude::{FromNapiValue, Unknown};
use napi::{Status, ValueType};

/// A JavaScript id as napi hands it over: a string or a number, told apart by `typeof`.
/// (napi's `Either<String, f64>` tries `String` first and formats an error message for
/// every number it is given, which cost a read by integer id more than its hash lookup.)
/// `#[napi]` signatures spell the type out with `ts_arg_type = "string | number"`.
pub type JsId<'a> = Unknown<'a>;

/// JavaScript's `Number.MAX_SAFE_INTEGER`: the largest integer a number carries exactly.
pub const SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

/// The error JavaScript sees for a core error: the stable code in brackets, then the
/// message. `lib/index.ts` parses the prefix back into `KeelError.code`.
pub fn to_napi_error(e: &Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, error_message(e))
}

/// A core error as the message JavaScript parses: `[KEEL_CODE] message`.
pub fn error_message(e: &Error) -> String {
    format!("[{}] {e}", e.code())
}

/// A core result as a napi result.
pub fn napi_result<T>(result: keeldb_core::Result<T>) -> napi::Result<T> {
    result.map_err(|e| to_napi_error(&e))
}

/// An error for a broken invariant of the binding itself. It has no `[KEEL_...]` prefix, so
/// JavaScript reports it as `KEEL_INTERNAL`.
pub fn panic_error(message: String) -> napi::Error {
    napi::Error::new(Status::GenericFailure, message)
}

/// Converts one id; strings are checked by the core when the batch is validated, numbers
/// here (`Id::from_f64` refuses fractions, negatives and unsafe integers).
pub fn to_id(id: JsId<'_>) -> keeldb_core::Result<Id> {
    let wrong = |e: napi::Error| Error::InvalidArgument(format!("id: {}", e.reason));
    match id.get_type().map_err(wrong)? {
        ValueType::Number => Id::from_f64(f64::from_unknown(id).map_err(wrong)?),
        ValueType::String => Ok(Id::Str(
            String::from_unknown(id).map_err(wrong)?.into_boxed_str(),
        )),
        other => Err(Error::InvalidArgument(format!(
            "an id must be a string or a number, got {other}"
        ))),
    }
}

/// Converts the ids of a batch, naming the position of the first bad one.
pub fn to_ids(ids: Vec<JsId<'_>>) -> keeldb_core::Result<Vec<Id>> {
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| to_id(id).map_err(|e| Error::InvalidArgument(format!("record {i}: {e}"))))
        .collect()
}

/// Parses an optional durability name (`None` means the database default).
pub fn to_durability(name: Option<String>) -> keeldb_core::Result<Option<Durability>> {
    name.map(|s| s.parse()).transpose()
}

/// Converts a JavaScript number that must be an integer from `min` to `max`.
pub fn to_integer(what: &str, value: f64, min: u64, max: u64) -> keeldb_core::Result<u64> {
    let in_range =
        value.is_finite() && value.fract() == 0.0 && value >= min as f64 && value <= max as f64;
    if !in_range {
        return Err(Error::InvalidArgument(format!(
            "{what} must be an integer from {min} to {max}, got {value}"
        )));
    }
    // The checks above make the cast exact (every caller's max is at most SAFE_INTEGER_MAX).
    Ok(value as u64)
}

/// Converts a JavaScript number that must fit a `u32` (the core checks narrower ranges).
pub fn to_u32(what: &str, value: f64) -> keeldb_core::Result<u32> {
    let n = to_integer(what, value, 0, u64::from(u32::MAX))?;
    u32::try_from(n).map_err(|_| Error::InvalidArgument(format!("{what} {n} does not fit 32 bits")))
}
