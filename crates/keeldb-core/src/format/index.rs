//! The id index file (`ids.idx`): the id-to-slot map as of the last checkpoint.
//!
//! ```text
//!   0  magic            [u8; 8]  "KEELIDX\0"
//!   8  version          u32      INDEX_VERSION
//!  12  dimension        u32
//!  16  checkpoint_lsn   u64      every log record with lsn <= this is in the vector file
//!  24  slot_high_water  u32      slots 0..slot_high_water have been handed out
//!  28  entry_count      u32
//!  32  free_count       u32
//!  36  uid              u32      the collection's (collection.json), 0 before format 3
//!  40  payload_generation u64    the payload log generation synced by this checkpoint
//!  48  payload_log_end    u64    its length then: every byte below is durable frames
//!  56  entries          entry_count x (id, slot u32)
//!      free slots       free_count x u32
//!  end-4  crc           u32      crc32 of every byte before it
//! ```
//!
//! Version 1 (before 2026-11-21) had no payload fields: its entries start at byte 40, and it
//! decodes with `payload_generation` 0 (unknown).
//!
//! Written whole, atomically (temp file, fsync, rename, fsync of the directory), so a
//! checksum failure means disk damage, never a torn write.

use super::{
    crc32, put_id_ref, ByteReader, DecodeError, ID_ENCODED_BYTES_MAX, ID_ENCODED_BYTES_MIN,
};
use crate::types::{Id, IdRef};

/// First bytes of an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"KEELIDX\0";
/// The index format this build writes and the newest it reads.
pub const INDEX_VERSION: u32 = 2;
/// Bytes before the first entry.
pub const INDEX_HEADER_LEN: usize = 56;
/// Bytes before the first entry in a version 1 index.
const INDEX_V1_HEADER_LEN: usize = 40;
const ENTRY_BYTES_MIN: usize = ID_ENCODED_BYTES_MIN + 4;
const ENTRY_BYTES_MAX: usize = ID_ENCODED_BYTES_MAX + 4;

/// The state a checkpoint makes durable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexSnapshot {
    /// Format version found (always [`INDEX_VERSION`] when encoding).
    pub version: u32,
    /// The collection's dimension.
    pub dimension: u32,
    /// Log records up to and including this lsn are reflected here.
    pub checkpoint_lsn: u64,
    /// Slots below this have been handed out at some point.
    pub slot_high_water: u32,
    /// Live records: id and the slot holding its vector.
    pub entries: Vec<(Id, u32)>,
    /// Slots below `slot_high_water` that hold no live record.
    pub free_slots: Vec<u32>,
    /// The payload log generation the checkpoint synced, or 0 if unknown (version 1).
    pub payload_generation: u64,
    /// Its length at the checkpoint: the bytes below are durable, whole frames.
    pub payload_log_end: u64,
    /// The collection's uid (0: written before there were uids).
    pub uid: u32,
}

/// An index file's fields besides its entries and free slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// The collection's dimension.
    pub dimension: u32,
    /// Log records up to and including this lsn are reflected in the file.
    pub checkpoint_lsn: u64,
    /// Slots below this have been handed out at some point.
    pub slot_high_water: u32,
    /// The payload log generation the checkpoint synced.
    pub payload_generation: u64,
    /// Its length at the checkpoint.
    pub payload_log_end: u64,
    /// The collection's uid.
    pub uid: u32,
}

/// Encodes an index file.
pub fn encode(snapshot: &IndexSnapshot) -> Vec<u8> {
    let header = IndexHeader {
        dimension: snapshot.dimension,
        checkpoint_lsn: snapshot.checkpoint_lsn,
        slot_high_water: snapshot.slot_high_water,
        payload_generation: snapshot.payload_generation,
        payload_log_end: snapshot.payload_log_end,
        uid: snapshot.uid,
    };
    let entries = snapshot.entries.iter().map(|(id, slot)| (id.into(), *slot));
    let free_slots = snapshot.free_slots.iter().copied();
    super::collect_chunks(|flush| encode_to(&header, entries, free_slots, flush))
}

/// Encodes an index file a chunk at a time into `flush` (see [`super::Chunked`]), straight
/// from the live and free slots, which are walked twice (once to count them). Returns
/// `flush`'s error, if any.
pub fn encode_to<'a, E>(
    header: &IndexHeader,
    entries: impl Iterator<Item = (IdRef<'a>, u32)> + Clone,
    free_slots: impl Iterator<Item = u32> + Clone,
    flush: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut out = super::Chunked::new(flush);
    let buf = out.buf();
    buf.extend_from_slice(&INDEX_MAGIC);
    buf.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    buf.extend_from_slice(&header.dimension.to_le_bytes());
    buf.extend_from_slice(&header.checkpoint_lsn.to_le_bytes());
    buf.extend_from_slice(&header.slot_high_water.to_le_bytes());
    buf.extend_from_slice(&count(entries.clone().count()).to_le_bytes());
    buf.extend_from_slice(&count(free_slots.clone().count()).to_le_bytes());
    buf.extend_from_slice(&header.uid.to_le_bytes());
    buf.extend_from_slice(&header.payload_generation.to_le_bytes());
    buf.extend_from_slice(&header.payload_log_end.to_le_bytes());
    debug_assert_eq!(buf.len(), INDEX_HEADER_LEN);
    for (id, slot) in entries {
        let buf = out.buf();
        put_id_ref(buf, id);
        buf.extend_from_slice(&slot.to_le_bytes());
        out.spill()?;
    }
    for slot in free_slots {
        out.buf().extend_from_slice(&slot.to_le_bytes());
        out.spill()?;
    }
    out.finish()
}

/// Where [`decode_with`] puts the entries it decodes.
pub trait EntrySink {
    /// Called once, before the entries, with their count and the slot high-water mark, both
    /// checked against the file's length.
    fn reserve(&mut self, entries: usize, slot_high_water: u32);
    /// One entry, its slot checked; an `Err` (its reason) refuses the file at its offset.
    fn entry(&mut self, id: Id, slot: u32) -> Result<(), String>;
}

impl EntrySink for Vec<(Id, u32)> {
    fn reserve(&mut self, entries: usize, _slot_high_water: u32) {
        Vec::reserve(self, entries);
    }

    fn entry(&mut self, id: Id, slot: u32) -> Result<(), String> {
        self.push((id, slot));
        Ok(())
    }
}

/// Decodes an index file, checking its checksum, its counts against its length, and that
/// every slot is below the high-water mark and used once. Duplicate ids are left to the
/// caller, which builds the id map anyway (a second hash table here would double the cost of
/// an open).
pub fn decode(bytes: &[u8]) -> Result<IndexSnapshot, DecodeError> {
    let mut entries = Vec::new();
    let snapshot = decode_with(bytes, &mut entries)?;
    Ok(IndexSnapshot {
        entries,
        ..snapshot
    })
}

/// [`decode`], handing the entries to `sink` instead of collecting them (the snapshot it
/// returns has no entries): opening builds its id maps from the file without a copy of
/// every entry in between.
pub fn decode_with(bytes: &[u8], sink: &mut impl EntrySink) -> Result<IndexSnapshot, DecodeError> {
    let (mut snapshot, counts, mut r) = header(bytes)?;
    let slot_high_water = snapshot.slot_high_water;
    // Every slot below the high-water mark is either live or free, exactly once.
    let mut seen = vec![false; slot_high_water as usize];
    let mut mark = |slot: u32, at: usize| -> Result<(), DecodeError> {
        match seen.get_mut(slot as usize) {
            Some(s) if !*s => {
                *s = true;
                Ok(())
            }
            Some(_) => Err(DecodeError::new(at, format!("slot {slot} is used twice"))),
            None => Err(DecodeError::new(
                at,
                format!("slot {slot} is at or above the high water mark {slot_high_water}"),
            )),
        }
    };
    sink.reserve(counts.entries, slot_high_water);
    for _ in 0..counts.entries {
        let at = r.position();
        let id = r.id()?;
        let slot = r.u32("slot")?;
        mark(slot, at)?;
        sink.entry(id, slot)
            .map_err(|reason| DecodeError::new(at, reason))?;
    }
    snapshot.free_slots.reserve_exact(counts.free);
    for _ in 0..counts.free {
        let at = r.position();
        let slot = r.u32("free slot")?;
        mark(slot, at)?;
        snapshot.free_slots.push(slot);
    }
    r.expect_end("the free slot list")?;
    Ok(snapshot)
}

/// The header of an index file, its checksum checked (over the whole file) and its counts
/// checked against its length: the snapshot without entries or free slots. Opening reads
/// this first, to start on the payload log while the entries are decoded.
pub fn decode_header(bytes: &[u8]) -> Result<IndexSnapshot, DecodeError> {
    header(bytes).map(|(snapshot, _, _)| snapshot)
}

/// How many entries and free slots an index file declares.
struct Counts {
    entries: usize,
    free: usize,
}

/// [`decode_header`], with the counts and a reader at the first entry.
fn header(bytes: &[u8]) -> Result<(IndexSnapshot, Counts, ByteReader<'_>), DecodeError> {
    if bytes.len() < INDEX_V1_HEADER_LEN + 4 {
        return Err(DecodeError::new(0, "index file is shorter than its header"));
    }
    if bytes[0..8] != INDEX_MAGIC {
        return Err(DecodeError::new(0, "not a keeldb index file (bad magic)"));
    }
    // The counts bound the length from above as well, checked before the checksum reads
    // every byte: a file much longer than they describe (a sparse one of many GiB, say)
    // would otherwise be read whole, into memory, only to fail.
    let field =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (entries, free) = (field(28) as usize, field(32) as usize);
    let header_len = match field(8) {
        1 => INDEX_V1_HEADER_LEN,
        _ => INDEX_HEADER_LEN,
    };
    let longest = entries
        .saturating_mul(ENTRY_BYTES_MAX)
        .saturating_add(free.saturating_mul(4))
        .saturating_add(header_len + 4);
    if bytes.len() > longest {
        return Err(DecodeError::new(
            longest,
            format!(
                "the file is {} bytes, more than its {entries} entries and {free} free slots \
                 can take ({longest})",
                bytes.len()
            ),
        ));
    }
    let crc_at = bytes.len() - 4;
    let mut tail = ByteReader::new(&bytes[crc_at..]);
    if tail.u32("crc")? != crc32(&bytes[..crc_at]) {
        return Err(DecodeError::new(crc_at, "index file checksum mismatch"));
    }
    let mut r = ByteReader::new(&bytes[..crc_at]);
    r.take(8, "magic")?;
    let version = r.u32("version")?;
    let dimension = r.u32("dimension")?;
    let checkpoint_lsn = r.u64("checkpoint lsn")?;
    let slot_high_water = r.u32("slot high water")?;
    let entry_count = r.u32("entry count")? as usize;
    let free_count = r.u32("free count")? as usize;
    let uid = r.u32("uid")?;
    let (payload_generation, payload_log_end) = match version {
        0 => return Err(DecodeError::new(8, "index version 0 was never written")),
        1 => (0, 0),
        _ => (r.u64("payload generation")?, r.u64("payload log end")?),
    };
    let needed = entry_count
        .saturating_mul(ENTRY_BYTES_MIN)
        .saturating_add(free_count.saturating_mul(4));
    #[cfg(feature = "planted-bugs")]
    let needed = if crate::planted::active(crate::planted::Bug::TrustLength) {
        0
    } else {
        needed
    };
    if needed > r.remaining() {
        return Err(DecodeError::new(
            24,
            format!(
                "{entry_count} entries and {free_count} free slots cannot fit in {} bytes",
                r.remaining()
            ),
        ));
    }
    let slot_count = entry_count + free_count;
    if slot_count != slot_high_water as usize {
        return Err(DecodeError::new(
            24,
            format!(
                "{entry_count} entries + {free_count} free slots != high water {slot_high_water}"
            ),
        ));
    }
    let snapshot = IndexSnapshot {
        version,
        dimension,
        checkpoint_lsn,
        slot_high_water,
        entries: Vec::new(),
        free_slots: Vec::new(),
        payload_generation,
        payload_log_end,
        uid,
    };
    let counts = Counts {
        entries: entry_count,
        free: free_count,
    };
    Ok((snapshot, counts, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_longer_than_its_counts_allow_is_refused_before_its_checksum_is_read() {
        // Longest in the sample: three entries of the longest id, one free slot. A byte
        // more (zeros, as a sparse file reads) is refused by length, not by the checksum
        // that would first read it all.
        let mut bytes = encode(&sample());
        let longest = INDEX_HEADER_LEN + 3 * ENTRY_BYTES_MAX + 4 + 4;
        bytes.resize(longest, 0);
        let e = decode_header(&bytes).expect_err("damaged");
        assert_eq!(
            e.reason, "index file checksum mismatch",
            "at the limit: the checksum"
        );
        bytes.push(0);
        let e = decode_header(&bytes).expect_err("too long");
        assert!(
            e.reason
                .contains("more than its 3 entries and 1 free slots"),
            "{}",
            e.reason
        );
    }

    fn sample() -> IndexSnapshot {
        IndexSnapshot {
            version: INDEX_VERSION,
            dimension: 4,
            checkpoint_lsn: 17,
            slot_high_water: 4,
            entries: vec![(Id::from("x"), 2), (Id::Int(5), 0), (Id::Int(6), 3)],
            free_slots: vec![1],
            payload_generation: 3,
            payload_log_end: 4096,
            uid: 11,
        }
    }

    #[test]
    fn a_version_1_index_decodes_with_the_payload_log_end_unknown() {
        let v2 = encode(&sample());
        let mut v1 = v2[..INDEX_V1_HEADER_LEN].to_vec();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&v2[INDEX_HEADER_LEN..v2.len() - 4]);
        let crc = crc32(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let decoded = decode(&v1).expect("version 1 decodes");
        assert_eq!(
            (decoded.payload_generation, decoded.payload_log_end),
            (0, 0)
        );
        assert_eq!(decoded.entries, sample().entries);
    }

    #[test]
    fn the_encoding_is_the_documented_layout() {
        // Byte by byte as the module documentation lays it out (tag 1 is a string id, tag 2
        // an integer id; see `put_id`).
        let mut want = Vec::new();
        want.extend_from_slice(b"KEELIDX\0");
        for field in [2u32, 4] {
            want.extend_from_slice(&field.to_le_bytes()); // version, dimension
        }
        want.extend_from_slice(&17u64.to_le_bytes()); // checkpoint_lsn
        for field in [4u32, 3, 1, 11] {
            want.extend_from_slice(&field.to_le_bytes()); // high water, entries, free, uid
        }
        want.extend_from_slice(&3u64.to_le_bytes()); // payload_generation
        want.extend_from_slice(&4096u64.to_le_bytes()); // payload_log_end
        want.extend_from_slice(&[1, 1, 0, b'x', 2, 0, 0, 0]); // "x" in slot 2
        want.extend_from_slice(&[2, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 5 in slot 0
        want.extend_from_slice(&[2, 6, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]); // 6 in slot 3
        want.extend_from_slice(&1u32.to_le_bytes()); // free slot 1
        let crc = crc32(&want);
        want.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(encode(&sample()), want);
    }

    #[test]
    fn a_large_index_is_handed_out_in_chunks_and_round_trips() {
        // 300,000 entries (~3.9 MB): several chunks, none much past CHUNK_BYTES, and the
        // CRC kept across them.
        let snapshot = IndexSnapshot {
            version: INDEX_VERSION,
            dimension: 8,
            checkpoint_lsn: 5,
            slot_high_water: 300_002,
            entries: (0..300_000u32)
                .map(|n| match n % 3 {
                    0 => (Id::from(format!("id-{n}").as_str()), n),
                    _ => (Id::Int(u64::from(n) * 7), n),
                })
                .collect(),
            free_slots: vec![300_000, 300_001],
            payload_generation: 1,
            payload_log_end: 32,
            uid: 0,
        };
        let mut chunks = Vec::new();
        let header = IndexHeader {
            dimension: 8,
            checkpoint_lsn: 5,
            slot_high_water: 300_002,
            payload_generation: 1,
            payload_log_end: 32,
            uid: 0,
        };
        let entries = snapshot.entries.iter().map(|(id, slot)| (id.into(), *slot));
        let free = snapshot.free_slots.iter().copied();
        let flushed = encode_to(&header, entries, free, &mut |chunk: &[u8]| {
            chunks.push(chunk.to_vec());
            Ok::<(), ()>(())
        });
        assert_eq!(flushed, Ok(()));
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        let (last, full) = chunks.split_last().expect("chunks");
        for chunk in full {
            assert!(
                (super::super::CHUNK_BYTES..super::super::CHUNK_BYTES + 600).contains(&chunk.len())
            );
        }
        assert!(last.len() <= super::super::CHUNK_BYTES + 600);
        let bytes = chunks.concat();
        assert_eq!(bytes, encode(&snapshot));
        assert_eq!(decode(&bytes), Ok(snapshot));
    }

    #[test]
    fn a_flush_error_stops_the_encoding_and_is_returned() {
        let snapshot = sample();
        let entries = snapshot.entries.iter().map(|(id, slot)| (id.into(), *slot));
        let header = IndexHeader {
            dimension: 4,
            checkpoint_lsn: 17,
            slot_high_water: 4,
            payload_generation: 3,
            payload_log_end: 4096,
            uid: 11,
        };
        let failed = encode_to(&header, entries, [1].into_iter(), &mut |_: &[u8]| {
            Err("disk full")
        });
        assert_eq!(failed, Err("disk full"));
    }

    #[test]
    fn index_round_trips() {
        assert_eq!(decode(&encode(&sample())), Ok(sample()));
        assert_eq!(
            decode(&encode(&IndexSnapshot {
                version: INDEX_VERSION,
                ..Default::default()
            }))
            .map(|s| s.entries.len()),
            Ok(0)
        );
    }

    #[test]
    fn truncation_and_bit_flips_are_detected() {
        crate::format::assert_every_cut_and_flip_refused(&encode(&sample()), decode);
    }

    #[test]
    fn slots_used_twice_are_refused_even_with_a_good_crc() {
        let mut s = sample();
        s.free_slots = vec![2];
        assert!(decode(&encode(&s)).is_err());
        let mut s = sample();
        s.entries[0].1 = 9;
        assert!(decode(&encode(&s)).is_err());
    }
}
