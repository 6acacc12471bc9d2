//! The payload log (`payloads-<generation>.log`): a file header, then CRC-framed store and
//! delete records, appended as write-ahead-log records are applied.
//!
//! ```text
//! file header (32 bytes)
//!   0  magic        [u8; 8]  "KEELPAY\0"
//!   8  version      u32      PAYLOAD_LOG_VERSION
//!  12  uid          u32      the collection's (collection.json), 0 before format 3
//!  16  generation   u64      the number in the file name; compaction writes the next one
//!  24  based_on     u32      a compaction's: checkpoint_tag of the checkpoint lsn ids.idx
//!                            held when it was renamed into place; 0 otherwise (and before
//!                            2026-11-22, when this was a reserved zero)
//!  28  header_crc   u32      crc32 of bytes 0..28
//!
//! frame (FRAME_OVERHEAD + body_len bytes)
//!   0  sync         u32      FRAME_SYNC ("KPAY"), lets recovery find the next frame
//!   4  kind         u8       1 store, 2 delete
//!   5  flags        u8       zero
//!   6  reserved     u16      zero
//!   8  body_len     u32      at most FRAME_BODY_BYTES_MAX
//!  12  lsn          u64      the write-ahead-log record this frame was derived from
//!  20  header_crc   u32      crc32 of frame bytes 0..20
//!  24  body         id, then (store only) the payload: JSON text, 1 to PAYLOAD_BYTES_MAX bytes
//!  24+body_len  crc u32      crc32 of every frame byte before it
//! ```
//!
//! The log holds no state of its own: every frame repeats what a log record said. The
//! framing is the write-ahead log's, with another sync marker, so the same damage rules
//! apply; the header CRC lets `body_len` be trusted before anything is read.

use super::wal::HeaderProblem;
use super::{crc32, id_encoded_len, put_id, ByteReader, DecodeError, ID_ENCODED_BYTES_MAX};
use crate::types::{Id, PAYLOAD_BYTES_MAX};

/// First bytes of every payload log.
pub const PAYLOAD_LOG_MAGIC: [u8; 8] = *b"KEELPAY\0";
/// The payload log format this build writes and the newest it reads.
pub const PAYLOAD_LOG_VERSION: u32 = 1;
/// Size of the file header; the first frame starts here.
pub const PAYLOAD_LOG_HEADER_LEN: usize = 32;
const HEADER_CRC_AT: usize = PAYLOAD_LOG_HEADER_LEN - 4;

/// Marks the start of each frame ("KPAY" read as a little-endian u32).
pub const FRAME_SYNC: u32 = u32::from_le_bytes(*b"KPAY");
/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 24;
const FRAME_HEADER_CRC_AT: usize = FRAME_HEADER_LEN - 4;
/// Bytes a frame takes beyond its body: the header and the trailing CRC.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + 4;
/// Most bytes a frame body may declare: the longest id and the largest payload.
pub const FRAME_BODY_BYTES_MAX: u32 = (ID_ENCODED_BYTES_MAX + PAYLOAD_BYTES_MAX) as u32;

const _: () = assert!(HEADER_CRC_AT == 8 + 4 + 4 + 8 + 4);
const _: () = assert!(FRAME_HEADER_CRC_AT == 4 + 1 + 1 + 2 + 4 + 8);

/// What a frame records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// The id's payload is the frame's JSON text.
    Store = 1,
    /// The id has no payload any more (deleted, overwritten without one, or cleared).
    Delete = 2,
}

impl FrameKind {
    /// The kind of a kind byte, or `None` for one this build does not know.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Store),
            2 => Some(FrameKind::Delete),
            _ => None,
        }
    }
}

/// Encodes a payload log header for `generation`, not made by a compaction.
pub fn encode_header(generation: u64, uid: u32) -> [u8; PAYLOAD_LOG_HEADER_LEN] {
    encode_compacted_header(generation, uid, 0)
}

/// Encodes the header of a generation a compaction made, renamed into place while ids.idx
/// held a checkpoint whose [`checkpoint_tag`] is `based_on` (0: unknown).
pub fn encode_compacted_header(
    generation: u64,
    uid: u32,
    based_on: u32,
) -> [u8; PAYLOAD_LOG_HEADER_LEN] {
    let mut out = [0u8; PAYLOAD_LOG_HEADER_LEN];
    out[0..8].copy_from_slice(&PAYLOAD_LOG_MAGIC);
    out[8..12].copy_from_slice(&PAYLOAD_LOG_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&uid.to_le_bytes());
    out[16..24].copy_from_slice(&generation.to_le_bytes());
    out[24..28].copy_from_slice(&based_on.to_le_bytes());
    let crc = crc32(&out[..HEADER_CRC_AT]);
    out[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A checkpoint's sequence number as a compacted generation's header names it: a 32-bit
/// digest, never 0 (0 there means "not made by a compaction, or before this field").
pub fn checkpoint_tag(checkpoint_lsn: u64) -> u32 {
    crc32(&checkpoint_lsn.to_le_bytes()).max(1)
}

/// What a payload log header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLogHeader {
    /// Format version of the file (may be newer than this build: the caller refuses it).
    pub version: u32,
    /// The generation the header names.
    pub generation: u64,
    /// The collection's uid (0: written before there were uids).
    pub uid: u32,
    /// For a generation a compaction made, the [`checkpoint_tag`] of the checkpoint ids.idx
    /// held when it was renamed into place; 0 otherwise.
    pub based_on: u32,
}

/// Decodes a payload log header.
pub fn decode_header(bytes: &[u8]) -> Result<PayloadLogHeader, DecodeError> {
    if bytes.len() < PAYLOAD_LOG_HEADER_LEN {
        return Err(DecodeError::new(
            0,
            "payload log is shorter than its header",
        ));
    }
    if bytes[0..8] != PAYLOAD_LOG_MAGIC {
        return Err(DecodeError::new(0, "not a keeldb payload log (bad magic)"));
    }
    let mut r = ByteReader::new(&bytes[8..PAYLOAD_LOG_HEADER_LEN]);
    let version = r.u32("version")?;
    let uid = r.u32("uid")?;
    let generation = r.u64("generation")?;
    let based_on = r.u32("based_on")?;
    if r.u32("header crc")? != crc32(&bytes[..HEADER_CRC_AT]) {
        return Err(DecodeError::new(
            HEADER_CRC_AT,
            "payload log header checksum mismatch",
        ));
    }
    Ok(PayloadLogHeader {
        version,
        generation,
        uid,
        based_on,
    })
}

/// A frame header whose checksum holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The kind byte (possibly unknown to this build).
    pub kind: u8,
    /// Length of the body.
    pub body_len: u32,
    /// Sequence number of the log record the frame came from.
    pub lsn: u64,
}

impl FrameHeader {
    /// Total bytes of the frame.
    pub fn frame_len(&self) -> u64 {
        FRAME_OVERHEAD as u64 + u64::from(self.body_len)
    }
}

/// Decodes a frame header from the start of `bytes`, trusting nothing before its CRC holds.
pub fn decode_frame_header(bytes: &[u8]) -> Result<FrameHeader, HeaderProblem> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(HeaderProblem::Short);
    }
    let field =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if field(0) != FRAME_SYNC || field(FRAME_HEADER_CRC_AT) != crc32(&bytes[..FRAME_HEADER_CRC_AT])
    {
        return Err(HeaderProblem::NotAHeader);
    }
    let kind = bytes[4];
    let body_len = field(8);
    if body_len > FRAME_BODY_BYTES_MAX {
        return Err(HeaderProblem::Oversized(body_len));
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&bytes[12..20]);
    Ok(FrameHeader {
        kind,
        body_len,
        lsn: u64::from_le_bytes(lsn),
    })
}

/// Checks the trailing CRC of a whole frame (`frame` is exactly `frame_len()` bytes).
pub fn frame_crc_ok(frame: &[u8]) -> bool {
    super::trailing_crc_ok(frame)
}

/// Appends a frame of `kind` for `id` (with `payload` for a store) derived from record
/// `lsn`, and returns its length. The caller checked the payload against its limits.
pub fn encode_frame(out: &mut Vec<u8>, kind: FrameKind, lsn: u64, id: &Id, payload: &[u8]) -> u32 {
    let start = out.len();
    let body_len = id_encoded_len(id) + payload.len();
    out.reserve(FRAME_OVERHEAD + body_len);
    out.extend_from_slice(&FRAME_SYNC.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    let header_crc = crc32(&out[start..start + FRAME_HEADER_CRC_AT]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    put_id(out, id);
    out.extend_from_slice(payload);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    u32::try_from(out.len() - start).unwrap_or(u32::MAX)
}

/// A decoded frame body: the id and, for a store, the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameBody<'a> {
    /// The record id.
    pub id: Id,
    /// The JSON text (store frames), `None` for a delete.
    pub payload: Option<&'a [u8]>,
}

/// Decodes the body of a frame of `kind` (one this build knows).
pub fn decode_frame_body(kind: FrameKind, body: &[u8]) -> Result<FrameBody<'_>, DecodeError> {
    let mut r = ByteReader::new(body);
    let id = r.id()?;
    let rest = r.take(r.remaining(), "payload")?;
    match kind {
        FrameKind::Delete if rest.is_empty() => Ok(FrameBody { id, payload: None }),
        FrameKind::Delete => Err(DecodeError::new(
            r.position(),
            "a delete frame carries bytes after its id",
        )),
        FrameKind::Store if rest.is_empty() || rest.len() > PAYLOAD_BYTES_MAX => {
            Err(DecodeError::new(
                r.position(),
                format!("a store frame's payload is {} bytes", rest.len()),
            ))
        }
        FrameKind::Store => Ok(FrameBody {
            id,
            payload: Some(rest),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            FrameKind::Store,
            7,
            &Id::from("doc"),
            br#"{"a":[1,2]}"#,
        );
        out
    }

    #[test]
    fn frames_round_trip() {
        let frame = sample();
        let h = decode_frame_header(&frame).expect("header");
        assert_eq!((h.kind, h.lsn, h.frame_len()), (1, 7, frame.len() as u64));
        assert!(frame_crc_ok(&frame));
        let body = &frame[FRAME_HEADER_LEN..frame.len() - 4];
        assert_eq!(
            decode_frame_body(FrameKind::Store, body),
            Ok(FrameBody {
                id: Id::from("doc"),
                payload: Some(&br#"{"a":[1,2]}"#[..])
            })
        );
        let mut del = Vec::new();
        let len = encode_frame(&mut del, FrameKind::Delete, 9, &Id::Int(3), b"");
        assert_eq!(len as usize, del.len());
        let body = &del[FRAME_HEADER_LEN..del.len() - 4];
        assert_eq!(
            decode_frame_body(FrameKind::Delete, body),
            Ok(FrameBody {
                id: Id::Int(3),
                payload: None
            })
        );
        assert!(decode_frame_body(FrameKind::Store, body).is_err());
    }

    #[test]
    fn every_bit_flip_and_every_cut_is_detected() {
        let frame = sample();
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let intact = match decode_frame_header(&bad) {
                Ok(h) => h.frame_len() == bad.len() as u64 && frame_crc_ok(&bad),
                Err(_) => false,
            };
            assert!(!intact, "flip of bit {bit} went unnoticed");
        }
        for cut in 0..frame.len() {
            let intact = match decode_frame_header(&frame[..cut]) {
                Ok(h) => h.frame_len() == cut as u64 && frame_crc_ok(&frame[..cut]),
                Err(_) => false,
            };
            assert!(!intact, "cut at {cut} went unnoticed");
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(42, 7);
        assert_eq!(
            decode_header(&h),
            Ok(PayloadLogHeader {
                version: PAYLOAD_LOG_VERSION,
                generation: 42,
                uid: 7,
                based_on: 0,
            })
        );
        let tag = checkpoint_tag(1234);
        assert_eq!(
            decode_header(&encode_compacted_header(43, 7, tag)).map(|h| h.based_on),
            Ok(tag)
        );
        assert_ne!(tag, checkpoint_tag(1235));
        assert!((0..10_000).all(|lsn| checkpoint_tag(lsn) != 0));
        for bit in 0..h.len() * 8 {
            let mut bad = h;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&bad).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn an_oversized_body_is_refused_before_it_is_read() {
        let mut frame = sample();
        frame[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32(&frame[..FRAME_HEADER_CRC_AT]);
        frame[FRAME_HEADER_CRC_AT..FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_frame_header(&frame),
            Err(HeaderProblem::Oversized(u32::MAX))
        );
    }
}
