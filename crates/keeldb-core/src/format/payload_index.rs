//! The payload snapshot (`payloads.idx`): where each id's payload frame is in the payload
//! log, as of a checkpoint, so that opening reads this instead of the whole log.
//!
//! ```text
//!   0  magic            [u8; 8]  "KEELPIX\0"
//!   8  version          u32      PAYLOAD_INDEX_VERSION
//!  12  uid              u32      the collection's (collection.json), 0 before format 3
//!  16  generation       u64      the payload log generation the offsets refer to
//!  24  checkpoint_lsn   u64      the entries are the payloads as of this record
//!  32  log_end          u64      frames before this offset are covered; replay goes on here
//!  40  entry_count      u32
//!  44  reserved         u32      zero
//!  48  entries          entry_count x (id, offset u64, frame_len u32)
//!  end-4  crc           u32      crc32 of every byte before it
//! ```
//!
//! Written whole and atomically at each checkpoint, after `ids.idx`. It only speeds up
//! opening: a missing, damaged or stale snapshot makes open replay the whole payload log.

use super::payload_log::{FRAME_BODY_BYTES_MAX, FRAME_OVERHEAD, PAYLOAD_LOG_HEADER_LEN};
use super::{
    crc32, put_id_ref, ByteReader, DecodeError, ID_ENCODED_BYTES_MAX, ID_ENCODED_BYTES_MIN,
};
use crate::types::{Id, IdMap, IdRef};

/// First bytes of a payload snapshot.
pub const PAYLOAD_INDEX_MAGIC: [u8; 8] = *b"KEELPIX\0";
/// The snapshot format this build writes and the newest it reads.
pub const PAYLOAD_INDEX_VERSION: u32 = 1;
/// Bytes before the first entry.
pub const PAYLOAD_INDEX_HEADER_LEN: usize = 48;
/// Offset of `checkpoint_lsn` in the header, for messages that point at it.
pub const PAYLOAD_INDEX_CHECKPOINT_LSN_AT: usize = 24;
const ENTRY_BYTES_MIN: usize = ID_ENCODED_BYTES_MIN + 8 + 4;
const ENTRY_BYTES_MAX: usize = ID_ENCODED_BYTES_MAX + 8 + 4;

/// Where a payload frame is in the payload log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PayloadLoc {
    /// Offset of the frame's first byte.
    pub offset: u64,
    /// Length of the whole frame.
    pub frame_len: u32,
}

/// What a payload snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PayloadSnapshot {
    /// Format version found (always [`PAYLOAD_INDEX_VERSION`] when encoding).
    pub version: u32,
    /// Generation of the payload log the offsets refer to.
    pub generation: u64,
    /// The entries are the payloads after every log record up to this one.
    pub checkpoint_lsn: u64,
    /// Offset in the payload log where the frames after the snapshot begin.
    pub log_end: u64,
    /// Every id that has a payload, and where its store frame is.
    pub entries: Vec<(Id, PayloadLoc)>,
    /// The collection's uid (0: written before there were uids).
    pub uid: u32,
}

/// Encodes a payload snapshot.
pub fn encode(snapshot: &PayloadSnapshot) -> Vec<u8> {
    let entries = snapshot.entries.iter().map(|(id, loc)| (id.into(), *loc));
    super::collect_chunks(|flush| {
        encode_to(
            snapshot.uid,
            snapshot.generation,
            snapshot.checkpoint_lsn,
            snapshot.log_end,
            entries,
            flush,
        )
    })
}

/// Encodes a payload snapshot a chunk at a time into `flush` (see [`super::Chunked`]),
/// straight from the entries, which are walked twice (once to count them). Returns
/// `flush`'s error, if any.
pub fn encode_to<'a, E>(
    uid: u32,
    generation: u64,
    checkpoint_lsn: u64,
    log_end: u64,
    entries: impl Iterator<Item = (IdRef<'a>, PayloadLoc)> + Clone,
    flush: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut out = super::Chunked::new(flush);
    let buf = out.buf();
    buf.extend_from_slice(&PAYLOAD_INDEX_MAGIC);
    buf.extend_from_slice(&PAYLOAD_INDEX_VERSION.to_le_bytes());
    buf.extend_from_slice(&uid.to_le_bytes());
    buf.extend_from_slice(&generation.to_le_bytes());
    buf.extend_from_slice(&checkpoint_lsn.to_le_bytes());
    buf.extend_from_slice(&log_end.to_le_bytes());
    let count = u32::try_from(entries.clone().count()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&count.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    debug_assert_eq!(buf.len(), PAYLOAD_INDEX_HEADER_LEN);
    for (id, loc) in entries {
        let buf = out.buf();
        put_id_ref(buf, id);
        buf.extend_from_slice(&loc.offset.to_le_bytes());
        buf.extend_from_slice(&loc.frame_len.to_le_bytes());
        out.spill()?;
    }
    out.finish()
}

/// Where [`decode_with`] puts the entries it decodes.
pub trait EntrySink {
    /// Called once, before the entries, with their count (checked against the file's length).
    fn reserve(&mut self, entries: usize);
    /// One entry, its frame checked to lie inside the covered log; an `Err` (its reason)
    /// refuses the file at this entry's offset.
    fn entry(&mut self, id: Id, loc: PayloadLoc) -> Result<(), String>;
}

/// Collects the entries, refusing an id seen twice.
#[derive(Default)]
struct Collect {
    entries: Vec<(Id, PayloadLoc)>,
    seen: IdMap<()>,
}

impl EntrySink for Collect {
    fn reserve(&mut self, entries: usize) {
        self.entries.reserve(entries);
        self.seen = IdMap::with_capacity(entries, 0);
    }

    fn entry(&mut self, id: Id, loc: PayloadLoc) -> Result<(), String> {
        if self.seen.insert(id.clone(), ()).is_some() {
            return Err(format!("id {id} appears twice"));
        }
        self.entries.push((id, loc));
        Ok(())
    }
}

/// Decodes a payload snapshot, checking its checksum, its count against its length, that
/// no id appears twice and that every frame lies between the log header and `log_end`.
pub fn decode(bytes: &[u8]) -> Result<PayloadSnapshot, DecodeError> {
    let mut sink = Collect::default();
    let snapshot = decode_with(bytes, &mut sink)?;
    Ok(PayloadSnapshot {
        entries: sink.entries,
        ..snapshot
    })
}

/// [`decode`], handing the entries to `sink` instead of collecting them (the snapshot it
/// returns has no entries). The sink must refuse an id seen twice: opening builds the
/// payload index straight from the file, and that map finds repeats anyway (a second hash
/// table here would cost as much as the rest of loading the snapshot).
pub fn decode_with(
    bytes: &[u8],
    sink: &mut impl EntrySink,
) -> Result<PayloadSnapshot, DecodeError> {
    if bytes.len() < PAYLOAD_INDEX_HEADER_LEN + 4 {
        return Err(DecodeError::new(
            0,
            "payload snapshot is shorter than its header",
        ));
    }
    if bytes[0..8] != PAYLOAD_INDEX_MAGIC {
        return Err(DecodeError::new(
            0,
            "not a keeldb payload snapshot (bad magic)",
        ));
    }
    // The count bounds the length from above as well, checked before the checksum reads
    // every byte (see `index::decode_with`).
    let entries = u32::from_le_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]) as usize;
    let longest = entries
        .saturating_mul(ENTRY_BYTES_MAX)
        .saturating_add(PAYLOAD_INDEX_HEADER_LEN + 4);
    if bytes.len() > longest {
        return Err(DecodeError::new(
            longest,
            format!(
                "the file is {} bytes, more than its {entries} entries can take ({longest})",
                bytes.len()
            ),
        ));
    }
    let crc_at = bytes.len() - 4;
    if ByteReader::new(&bytes[crc_at..]).u32("crc")? != crc32(&bytes[..crc_at]) {
        return Err(DecodeError::new(
            crc_at,
            "payload snapshot checksum mismatch",
        ));
    }
    let mut r = ByteReader::new(&bytes[..crc_at]);
    r.take(8, "magic")?;
    let version = r.u32("version")?;
    let uid = r.u32("uid")?;
    let generation = r.u64("generation")?;
    let checkpoint_lsn = r.u64("checkpoint lsn")?;
    let log_end = r.u64("log end")?;
    let entry_count = r.u32("entry count")? as usize;
    r.u32("reserved")?;
    if log_end < PAYLOAD_LOG_HEADER_LEN as u64 {
        return Err(DecodeError::new(
            32,
            format!("log end {log_end} is inside the log header"),
        ));
    }
    if entry_count.saturating_mul(ENTRY_BYTES_MIN) > r.remaining() {
        return Err(DecodeError::new(
            40,
            format!(
                "{entry_count} entries cannot fit in {} bytes",
                r.remaining()
            ),
        ));
    }
    sink.reserve(entry_count);
    for _ in 0..entry_count {
        let at = r.position();
        let id = r.id()?;
        let loc = PayloadLoc {
            offset: r.u64("offset")?,
            frame_len: r.u32("frame length")?,
        };
        // A frame is never longer than the largest keeldb writes: reading one allocates
        // its length, and the log may be a sparse file as long as any `log_end`.
        let inside = loc.offset >= PAYLOAD_LOG_HEADER_LEN as u64
            && loc.frame_len as usize > FRAME_OVERHEAD
            && loc.frame_len as usize <= FRAME_OVERHEAD + FRAME_BODY_BYTES_MAX as usize
            && loc.offset.saturating_add(u64::from(loc.frame_len)) <= log_end;
        if !inside {
            return Err(DecodeError::new(
                at,
                format!(
                    "frame at {} ({} bytes) is outside the covered log",
                    loc.offset, loc.frame_len
                ),
            ));
        }
        sink.entry(id, loc)
            .map_err(|reason| DecodeError::new(at, reason))?;
    }
    r.expect_end("the entries")?;
    Ok(PayloadSnapshot {
        version,
        generation,
        checkpoint_lsn,
        log_end,
        entries: Vec::new(),
        uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_longer_than_its_count_allows_is_refused_before_its_checksum_is_read() {
        let snapshot = sample();
        let mut bytes = encode(&snapshot);
        let longest = PAYLOAD_INDEX_HEADER_LEN + snapshot.entries.len() * ENTRY_BYTES_MAX + 4;
        bytes.resize(longest, 0);
        let e = decode(&bytes).expect_err("damaged");
        assert_eq!(
            e.reason, "payload snapshot checksum mismatch",
            "at the limit: the checksum"
        );
        bytes.push(0);
        let e = decode(&bytes).expect_err("too long");
        assert!(e.reason.contains("more than its"), "{}", e.reason);
    }

    fn sample() -> PayloadSnapshot {
        PayloadSnapshot {
            version: PAYLOAD_INDEX_VERSION,
            uid: 13,
            generation: 3,
            checkpoint_lsn: 99,
            log_end: 4096,
            entries: vec![
                (
                    Id::from("a"),
                    PayloadLoc {
                        offset: 32,
                        frame_len: 40,
                    },
                ),
                (
                    Id::Int(9),
                    PayloadLoc {
                        offset: 72,
                        frame_len: 1000,
                    },
                ),
            ],
        }
    }

    #[test]
    fn a_large_snapshot_is_handed_out_in_chunks_and_round_trips() {
        let snapshot = PayloadSnapshot {
            version: PAYLOAD_INDEX_VERSION,
            uid: 0,
            generation: 2,
            checkpoint_lsn: 7,
            log_end: 1 << 40,
            entries: (0..200_000u64)
                .map(|n| {
                    let id = match n % 2 {
                        0 => Id::from(format!("doc-{n}").as_str()),
                        _ => Id::Int(n),
                    };
                    let loc = PayloadLoc {
                        offset: 32 + n * 100,
                        frame_len: 100,
                    };
                    (id, loc)
                })
                .collect(),
        };
        let mut chunks = Vec::new();
        let entries = snapshot.entries.iter().map(|(id, loc)| (id.into(), *loc));
        let flushed = encode_to(0, 2, 7, 1 << 40, entries, &mut |chunk: &[u8]| {
            chunks.push(chunk.len());
            Ok::<(), ()>(())
        });
        assert_eq!(flushed, Ok(()));
        assert!(chunks.len() >= 3, "{chunks:?}");
        assert!(
            chunks.iter().all(|&n| n <= super::super::CHUNK_BYTES + 600),
            "{chunks:?}"
        );
        let bytes = encode(&snapshot);
        assert_eq!(chunks.iter().sum::<usize>(), bytes.len());
        let decoded = decode(&bytes).expect("decodes");
        assert_eq!(decoded, snapshot);
    }

    #[test]
    fn snapshot_round_trips() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes), Ok(sample()));
        let at = PAYLOAD_INDEX_CHECKPOINT_LSN_AT;
        let lsn = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        assert_eq!(lsn, sample().checkpoint_lsn, "the documented offset");
    }

    #[test]
    fn truncation_and_bit_flips_are_detected() {
        crate::format::assert_every_cut_and_flip_refused(&encode(&sample()), decode);
    }

    #[test]
    fn entries_outside_the_log_or_twice_are_refused_even_with_a_good_crc() {
        let mut s = sample();
        s.entries[1].1.offset = 4000;
        assert!(decode(&encode(&s)).is_err());
        let mut s = sample();
        s.entries[1].0 = Id::from("a");
        assert!(decode(&encode(&s)).is_err());
        let mut s = sample();
        s.entries[0].1.offset = 8;
        assert!(decode(&encode(&s)).is_err());
        // A frame longer than any keeldb writes, inside a (sparse) log that long.
        let mut s = sample();
        s.log_end = u64::from(u32::MAX) + 4096;
        s.entries[1].1.frame_len = u32::MAX;
        assert!(decode(&encode(&s)).is_err());
    }
}
