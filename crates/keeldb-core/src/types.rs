//! The vocabulary shared by every layer: record ids, metrics, durability and recovery modes,
//! and the limits put on everything a caller or a file can declare.

use crate::error::{Error, Result};

/// Longest string id, in UTF-8 bytes.
pub const ID_STRING_BYTES_MAX: usize = 512;
/// Largest integer id: JavaScript's `Number.MAX_SAFE_INTEGER`, so ids survive the trip to JS.
pub const ID_INTEGER_MAX: u64 = (1 << 53) - 1;
/// Largest vector dimension a collection may declare.
pub const DIMENSION_MAX: u32 = 65_536;
/// Longest collection name, in bytes (names are `[A-Za-z0-9_-]`).
pub const COLLECTION_NAME_BYTES_MAX: usize = 64;
/// Most records one atomic batch may carry.
pub const BATCH_RECORDS_MAX: usize = 1_000_000;
/// Largest log sequence number accepted from disk (in a log record or an index). Far above
/// any real log (one write a nanosecond would take 146 years to reach it), and low enough
/// that the next sequence number can never overflow: a larger one is refused as corruption.
pub const LSN_MAX: u64 = 1 << 62;
/// Most bytes one write-ahead-log record (one atomic batch) may occupy. Checked before the
/// batch is written and, on replay, before any declared length is trusted.
pub const WAL_RECORD_BYTES_MAX: u32 = 1 << 30;
/// Most bytes one record's payload (its JSON text) may take: 16 MiB.
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;
/// Deepest nesting of arrays and objects a payload may have (a scalar is depth 0, `{}` is 1).
pub const PAYLOAD_DEPTH_MAX: usize = 64;

type FastHash = foldhash::fast::RandomState;

/// A map keyed by record id, with the fast seeded hasher every id map of keeldb uses.
///
/// Integer ids live in a table of their own keyed by the bare `u64`: an entry there is the
/// integer and the value, not a 24-byte [`Id`] enum, and hashing it is one multiply. Opening
/// a collection builds a map of every id, so for the common all-integer collection this
/// halves the memory the open touches and most of its time.
#[derive(Debug, Clone)]
pub struct IdMap<V> {
    ints: std::collections::HashMap<u64, V, FastHash>,
    strs: std::collections::HashMap<Box<str>, V, FastHash>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap {
            ints: Default::default(),
            strs: Default::default(),
        }
    }
}

impl<V> IdMap<V> {
    /// An empty map with room for `ints` integer ids and `strs` string ids.
    pub fn with_capacity(ints: usize, strs: usize) -> Self {
        IdMap {
            ints: std::collections::HashMap::with_capacity_and_hasher(ints, FastHash::default()),
            strs: std::collections::HashMap::with_capacity_and_hasher(strs, FastHash::default()),
        }
    }

    /// How many ids the map holds.
    pub fn len(&self) -> usize {
        self.ints.len() + self.strs.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `id`.
    pub fn get(&self, id: &Id) -> Option<&V> {
        match id {
            Id::Int(n) => self.ints.get(n),
            Id::Str(s) => self.strs.get(s),
        }
    }

    /// Whether `id` is in the map.
    pub fn contains_key(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    /// Makes room for `additional` more ids of `like`'s kind (integer or string), if the
    /// memory can be had.
    pub fn try_reserve_like(&mut self, like: &Id, additional: usize) {
        let _ = match like {
            Id::Int(_) => self.ints.try_reserve(additional),
            Id::Str(_) => self.strs.try_reserve(additional),
        };
    }

    /// Sets `id`'s value, returning the one it replaces.
    pub fn insert(&mut self, id: Id, value: V) -> Option<V> {
        match id {
            Id::Int(n) => self.ints.insert(n, value),
            Id::Str(s) => self.strs.insert(s, value),
        }
    }

    /// Adds `id`, unless it is there already (then it is handed back).
    pub fn insert_new(&mut self, id: Id, value: V) -> std::result::Result<(), Id> {
        use std::collections::hash_map::Entry;
        match id {
            Id::Int(n) => match self.ints.entry(n) {
                Entry::Occupied(_) => Err(Id::Int(n)),
                Entry::Vacant(slot) => {
                    slot.insert(value);
                    Ok(())
                }
            },
            Id::Str(s) => match self.strs.entry(s) {
                Entry::Occupied(taken) => Err(Id::Str(taken.key().clone())),
                Entry::Vacant(slot) => {
                    slot.insert(value);
                    Ok(())
                }
            },
        }
    }

    /// Removes `id`, returning its value.
    pub fn remove(&mut self, id: &Id) -> Option<V> {
        match id {
            Id::Int(n) => self.ints.remove(n),
            Id::Str(s) => self.strs.remove(s),
        }
    }

    /// Every id, borrowed, and its value, in no particular order.
    pub fn iter_ref(&self) -> impl Iterator<Item = (IdRef<'_>, &V)> + Clone {
        let ints = self.ints.iter().map(|(n, v)| (IdRef::Int(*n), v));
        ints.chain(self.strs.iter().map(|(s, v)| (IdRef::Str(s), v)))
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.ints.values().chain(self.strs.values())
    }

    /// Every value, mutable, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.ints.values_mut().chain(self.strs.values_mut())
    }
}

/// Builds an [`IdMap`] from entries handed over one at a time (by a decoder), refusing an id
/// seen twice. Entries are inserted a batch at a time: a loop doing nothing but inserts
/// into a large table overlaps its cache misses, and ran several times faster than inserting
/// each entry between decoding the next ones.
#[derive(Debug)]
pub struct IdMapBuilder<V> {
    map: IdMap<V>,
    batch: Vec<(Id, V)>,
}

/// Entries inserted at once by an [`IdMapBuilder`].
const ID_MAP_BUILDER_BATCH: usize = 4096;

impl<V> Default for IdMapBuilder<V> {
    fn default() -> Self {
        IdMapBuilder {
            map: IdMap::default(),
            batch: Vec::new(),
        }
    }
}

impl<V> IdMapBuilder<V> {
    /// Makes room for `entries` integer ids.
    pub fn reserve(&mut self, entries: usize) {
        self.map = IdMap::with_capacity(entries, 0);
        self.batch = Vec::with_capacity(entries.min(ID_MAP_BUILDER_BATCH));
    }

    /// Adds an entry; refuses (with the reason) the batch it completes if an id in it was
    /// seen before.
    pub fn push(&mut self, id: Id, value: V) -> std::result::Result<(), String> {
        self.batch.push((id, value));
        match self.batch.len() >= ID_MAP_BUILDER_BATCH {
            true => self.insert_batch(),
            false => Ok(()),
        }
    }

    /// The map, once every entry is in; refuses (with the reason) an id seen twice.
    pub fn finish(mut self) -> std::result::Result<IdMap<V>, String> {
        self.insert_batch()?;
        Ok(self.map)
    }

    fn insert_batch(&mut self) -> std::result::Result<(), String> {
        for (id, value) in self.batch.drain(..) {
            self.map
                .insert_new(id, value)
                .map_err(|id| format!("id {id} appears twice"))?;
        }
        Ok(())
    }
}

impl<V> FromIterator<(Id, V)> for IdMap<V> {
    fn from_iter<I: IntoIterator<Item = (Id, V)>>(iter: I) -> Self {
        let mut map = IdMap::default();
        for (id, value) in iter {
            map.insert(id, value);
        }
        map
    }
}

/// A record's id: a string or a non-negative safe integer. The two never compare equal,
/// so `"1"` and `1` are different records, as they are to a JavaScript caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    /// A string of 1 to [`ID_STRING_BYTES_MAX`] UTF-8 bytes.
    Str(Box<str>),
    /// An integer from 0 to [`ID_INTEGER_MAX`].
    Int(u64),
}

/// An [`Id`] borrowed: what encoders take, so that writing an index copies no string id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdRef<'a> {
    /// A string id.
    Str(&'a str),
    /// An integer id.
    Int(u64),
}

impl<'a> From<&'a Id> for IdRef<'a> {
    fn from(id: &'a Id) -> Self {
        match id {
            Id::Str(s) => IdRef::Str(s),
            Id::Int(n) => IdRef::Int(*n),
        }
    }
}

impl Id {
    /// Checks the id's limits.
    pub fn validate(&self) -> Result<()> {
        match self {
            Id::Str(s) if s.is_empty() => Err(Error::invalid("id must not be an empty string")),
            Id::Str(s) if s.len() > ID_STRING_BYTES_MAX => Err(Error::invalid(format!(
                "string id is {} UTF-8 bytes, the limit is {ID_STRING_BYTES_MAX}",
                s.len()
            ))),
            Id::Int(n) if *n > ID_INTEGER_MAX => Err(Error::invalid(format!(
                "integer id {n} is larger than {ID_INTEGER_MAX} (Number.MAX_SAFE_INTEGER)"
            ))),
            _ => Ok(()),
        }
    }

    /// Converts a JavaScript number to an integer id, refusing what is not a non-negative
    /// safe integer.
    pub fn from_f64(value: f64) -> Result<Id> {
        let is_safe_integer = value.is_finite()
            && value.fract() == 0.0
            && value >= 0.0
            && value <= ID_INTEGER_MAX as f64;
        if !is_safe_integer {
            // As JavaScript writes it: 1e300, 5e-324 and Infinity, not hundreds of digits
            // or Rust's `inf`.
            let shown = if value.is_infinite() {
                format!("{}Infinity", if value < 0.0 { "-" } else { "" })
            } else if value != 0.0 && (value.abs() >= 1e21 || value.abs() < 1e-6) {
                format!("{value:e}")
            } else {
                format!("{value}")
            };
            return Err(Error::invalid(format!(
                "integer id must be a non-negative safe integer, got {shown}"
            )));
        }
        // The checks above make the cast exact.
        Ok(Id::Int(value as u64))
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        IdRef::from(self).fmt(f)
    }
}

impl std::fmt::Display for IdRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdRef::Str(s) => write!(f, "{s:?}"),
            IdRef::Int(n) => write!(f, "{n}"),
        }
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::Str(s.into())
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Int(n)
    }
}

/// How distances between vectors are measured. Fixed when a collection is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// 1 - cosine similarity.
    Cosine,
    /// The negated dot product.
    Dot,
    /// The L2 distance.
    Euclidean,
}

impl Metric {
    /// The metric's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::Euclidean => "euclidean",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "dot" => Ok(Metric::Dot),
            "euclidean" => Ok(Metric::Euclidean),
            other => Err(Error::invalid(format!(
                "metric must be 'cosine', 'dot' or 'euclidean', got '{other}'"
            ))),
        }
    }
}

/// When a write is acknowledged, relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The write returns after its log bytes are fsynced (fdatasync): it survives a process
    /// crash and a power loss.
    #[default]
    Fsync,
    /// The write returns after its log bytes are handed to the OS (write(2)): it survives a
    /// process crash, not a power loss or kernel crash.
    Flush,
    /// The log bytes may stay in keeldb's own buffer until the next `flush`, checkpoint or
    /// close: a crash may lose them. For bulk loads that can be redone.
    None,
}

impl std::str::FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "flush" => Ok(Durability::Flush),
            "none" => Ok(Durability::None),
            other => Err(Error::invalid(format!(
                "durability must be 'fsync', 'flush' or 'none', got '{other}'"
            ))),
        }
    }
}

/// What replay does with a log record that is fully framed (its header checks out) but whose
/// checksum fails, or with damaged bytes that are followed by valid records. A torn tail is
/// not corruption: under every policy it is cut off, keeping every record before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryPolicy {
    /// Skip the damaged record, count it in `corrupt_records_skipped` and go on. Records after
    /// it are kept. The default: one flipped bit does not make a whole collection unreadable.
    #[default]
    Salvage,
    /// Refuse to open: the error names the file and the offset of the damage.
    Strict,
}

impl std::str::FromStr for RecoveryPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "salvage" => Ok(RecoveryPolicy::Salvage),
            "strict" => Ok(RecoveryPolicy::Strict),
            other => Err(Error::invalid(format!(
                "recovery must be 'salvage' or 'strict', got '{other}'"
            ))),
        }
    }
}

/// Checks a collection name: `[A-Za-z0-9_-]{1,64}`. Names can never contain '.', which keeps
/// them apart from keeldb's own temporary and lock files in the database directory.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > COLLECTION_NAME_BYTES_MAX || !valid_chars {
        return Err(Error::invalid(format!(
            "collection name must match [A-Za-z0-9_-]{{1,{COLLECTION_NAME_BYTES_MAX}}}, got {name:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_map_keeps_integer_and_string_ids_apart() {
        let mut map = IdMap::default();
        assert_eq!(map.insert(Id::Int(7), 1), None);
        assert_eq!(map.insert(Id::from("7"), 2), None);
        assert_eq!(map.insert(Id::Int(7), 3), Some(1));
        assert_eq!(
            (map.get(&Id::Int(7)), map.get(&Id::from("7"))),
            (Some(&3), Some(&2))
        );
        assert_eq!(map.insert_new(Id::from("7"), 4), Err(Id::from("7")));
        assert_eq!(map.len(), 2);
        let mut all: Vec<(IdRef<'_>, u32)> = map.iter_ref().map(|(id, v)| (id, *v)).collect();
        all.sort();
        assert_eq!(all, vec![(IdRef::Str("7"), 2), (IdRef::Int(7), 3)]);
        assert_eq!(map.remove(&Id::Int(7)), Some(3));
        assert!(!map.contains_key(&Id::Int(7)) && map.contains_key(&Id::from("7")));
    }

    #[test]
    fn an_id_map_builder_refuses_a_repeat_in_any_batch() {
        // A repeat within the first batch, across batches, and in the last, partial batch.
        let n = 3 * ID_MAP_BUILDER_BATCH as u64 + 5;
        for repeat_at in [10, ID_MAP_BUILDER_BATCH as u64 + 3, n - 1] {
            let mut builder = IdMapBuilder::default();
            builder.reserve(n as usize);
            let mut refused = None;
            for i in 0..n {
                let id = if i == repeat_at {
                    Id::Int(2)
                } else {
                    Id::Int(i)
                };
                if let Err(reason) = builder.push(id, i) {
                    refused = Some(reason);
                    break;
                }
            }
            let refused = refused.or_else(|| builder.finish().err());
            assert_eq!(
                refused.as_deref(),
                Some("id 2 appears twice"),
                "repeat at {repeat_at}"
            );
        }
        let mut builder = IdMapBuilder::default();
        (0..n).for_each(|i| builder.push(Id::Int(i), i).expect("no repeat"));
        let map = builder.finish().expect("no repeat");
        assert_eq!(
            (map.len(), map.get(&Id::Int(n - 1))),
            (n as usize, Some(&(n - 1)))
        );
    }

    #[test]
    fn integer_ids_must_be_safe_non_negative_integers() {
        assert_eq!(Id::from_f64(0.0).ok(), Some(Id::Int(0)));
        assert_eq!(
            Id::from_f64(ID_INTEGER_MAX as f64).ok(),
            Some(Id::Int(ID_INTEGER_MAX))
        );
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, 2f64.powi(53)] {
            assert!(Id::from_f64(bad).is_err(), "{bad} accepted");
        }
        // A huge number is named as JavaScript writes it, not in 301 digits.
        let message = Id::from_f64(1e300).expect_err("huge").to_string();
        assert!(message.ends_with("got 1e300"), "{message}");
        let message = Id::from_f64(-2.5).expect_err("negative").to_string();
        assert!(message.ends_with("got -2.5"), "{message}");
        let message = Id::from_f64(5e-324).expect_err("tiny").to_string();
        assert!(message.ends_with("got 5e-324"), "{message}");
        for (bad, shown) in [
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ] {
            let message = Id::from_f64(bad).expect_err("not finite").to_string();
            assert!(message.ends_with(&format!("got {shown}")), "{message}");
        }
    }

    #[test]
    fn string_ids_are_bounded() {
        assert!(Id::from("").validate().is_err());
        assert!(Id::from("a".repeat(512).as_str()).validate().is_ok());
        assert!(Id::from("a".repeat(513).as_str()).validate().is_err());
    }

    #[test]
    fn collection_names_are_checked() {
        for ok in ["a", "docs_2", "A-b", &"x".repeat(64)] {
            assert!(validate_collection_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".tmp", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(validate_collection_name(bad).is_err(), "{bad}");
        }
    }
}
