//! The write-ahead log (`vectors.wal`): a file header, then CRC-framed records.
//!
//! ```text
//! file header (32 bytes)
//!   0  magic        [u8; 8]  "KEELWAL\0"
//!   8  version      u32      WAL_VERSION
//!  12  dimension    u32      the collection's dimension
//!  16  uid          u32      the collection's (collection.json), 0 before format 3
//!  20  reserved     [u8; 8]  zero
//!  28  header_crc   u32      crc32 of bytes 0..28
//!
//! record (RECORD_OVERHEAD + body_len bytes)
//!   0  sync         u32      RECORD_SYNC, lets replay find the next record after damage
//!   4  kind         u8       RecordKind
//!   5  flags        u8       RECORD_FLAG_AFTER_SYNC, or zero
//!   6  reserved     u16      zero
//!   8  body_len     u32      at most WAL_RECORD_BYTES_MAX
//!  12  lsn          u64      log sequence number, strictly increasing
//!  20  header_crc   u32      crc32 of record bytes 0..20: the length is trusted only after it
//!  24  body         [u8; body_len]
//!  24+body_len  body_crc u32 crc32 of record bytes 0..24+body_len (header and body)
//!
//! batch body (kind 1): one atomic group of operations
//!   0  op_count     u32
//!   4  ops: op u8, then
//!        1 upsert               id, dimension x f32             (the record has no payload)
//!        2 delete               id
//!        3 upsert with payload  id, dimension x f32, payload_len u32 (1..), payload
//!        4 set payload          id, payload_len u32 (0: none), payload
//! id: tag u8 (1 string: len u16 + UTF-8 bytes; 2 integer: u64)
//! payload: JSON text, at most PAYLOAD_BYTES_MAX bytes
//! ```
//!
//! Ops 3 and 4 exist from collection format 2 on. A payload travels in the same record as
//! its vector, so a record is atomic by construction: the log is keeldb's one commit point.
//!
//! Kinds 2 and up are reserved (transactions, ...); a reader that meets a
//! kind it does not know stops and refuses to append after it.

use super::{crc32, put_f32s, put_id, ByteReader, DecodeError, ID_ENCODED_BYTES_MIN};
use crate::types::{Id, PAYLOAD_BYTES_MAX, WAL_RECORD_BYTES_MAX};

/// First bytes of every log file.
pub const WAL_MAGIC: [u8; 8] = *b"KEELWAL\0";
/// The log format this build writes and the newest it reads.
pub const WAL_VERSION: u32 = 1;
/// Size of the file header.
pub const WAL_HEADER_LEN: usize = 32;
const WAL_HEADER_CRC_AT: usize = WAL_HEADER_LEN - 4;

/// Marks the start of each record ("KREC" read as a little-endian u32).
pub const RECORD_SYNC: u32 = u32::from_le_bytes(*b"KREC");
/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 24;
const RECORD_HEADER_CRC_AT: usize = RECORD_HEADER_LEN - 4;
/// Bytes a record takes beyond its body: the header and the trailing body CRC.
pub const RECORD_OVERHEAD: usize = RECORD_HEADER_LEN + 4;

const _: () = assert!(WAL_HEADER_CRC_AT == WAL_MAGIC.len() + 4 + 4 + 12);
const _: () = assert!(RECORD_HEADER_CRC_AT == 4 + 1 + 1 + 2 + 4 + 8);

/// Record flag: every byte of the log before this record was durable (fdatasynced) when the
/// writer appended it. Replay uses it to tell damage in synced bytes (mid-log damage, handled
/// per recovery policy) from a torn write of records that were never synced together (a torn
/// tail, cut), since a crash can keep the sectors of unsynced writes in any order. Builds
/// before it wrote zero here and ignore the byte, so the log version did not change.
pub const RECORD_FLAG_AFTER_SYNC: u8 = 1;

/// The record kinds this build understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An atomic batch of upserts and deletes.
    Batch = 1,
}

/// The highest record kind this build understands.
pub const RECORD_KIND_MAX: u8 = RecordKind::Batch as u8;

const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_UPSERT_WITH_PAYLOAD: u8 = 3;
const OP_SET_PAYLOAD: u8 = 4;

/// Encodes a log file header for a collection of `dimension`.
pub fn encode_header(dimension: u32, uid: u32) -> [u8; WAL_HEADER_LEN] {
    let mut out = [0u8; WAL_HEADER_LEN];
    out[0..8].copy_from_slice(&WAL_MAGIC);
    out[8..12].copy_from_slice(&WAL_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&dimension.to_le_bytes());
    out[16..20].copy_from_slice(&uid.to_le_bytes());
    let crc = crc32(&out[..WAL_HEADER_CRC_AT]);
    out[WAL_HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// What a log file header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// Format version of the file.
    pub version: u32,
    /// Dimension of the vectors in its records.
    pub dimension: u32,
    /// The collection's uid (0: written before there were uids).
    pub uid: u32,
}

/// Decodes a log file header. A version above [`WAL_VERSION`] is returned as such, for the
/// caller to refuse with the right error.
pub fn decode_header(bytes: &[u8]) -> Result<WalHeader, DecodeError> {
    if bytes.len() < WAL_HEADER_LEN {
        return Err(DecodeError::new(0, "log file is shorter than its header"));
    }
    if bytes[0..8] != WAL_MAGIC {
        return Err(DecodeError::new(0, "not a keeldb log file (bad magic)"));
    }
    let mut r = ByteReader::new(&bytes[8..WAL_HEADER_LEN]);
    let version = r.u32("version")?;
    let dimension = r.u32("dimension")?;
    let uid = r.u32("uid")?;
    r.take(8, "reserved")?;
    let stored_crc = r.u32("header crc")?;
    if stored_crc != crc32(&bytes[..WAL_HEADER_CRC_AT]) {
        return Err(DecodeError::new(
            WAL_HEADER_CRC_AT,
            "log file header checksum mismatch",
        ));
    }
    Ok(WalHeader {
        version,
        dimension,
        uid,
    })
}

/// A record header whose checksum holds: its fields can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The record kind byte (possibly unknown to this build).
    pub kind: u8,
    /// The flags byte ([`RECORD_FLAG_AFTER_SYNC`]; other bits are ignored).
    pub flags: u8,
    /// Length of the body.
    pub body_len: u32,
    /// The record's log sequence number.
    pub lsn: u64,
}

impl RecordHeader {
    /// Total bytes of the record: header, body and body CRC.
    pub fn frame_len(&self) -> u64 {
        RECORD_OVERHEAD as u64 + u64::from(self.body_len)
    }
}

/// Why the bytes at a position are not a record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Fewer than [`RECORD_HEADER_LEN`] bytes remain.
    Short,
    /// The sync marker or the header CRC does not match: these are not header bytes.
    NotAHeader,
    /// The header checks out but declares a body longer than [`WAL_RECORD_BYTES_MAX`]:
    /// keeldb never writes that, so the file is hostile or from another program.
    Oversized(u32),
}

/// Decodes a record header from the start of `bytes`, trusting nothing before its CRC holds.
pub fn decode_record_header(bytes: &[u8]) -> Result<RecordHeader, HeaderProblem> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(HeaderProblem::Short);
    }
    let field = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    if u32::from_le_bytes(field(0)) != RECORD_SYNC {
        return Err(HeaderProblem::NotAHeader);
    }
    let stored_crc = u32::from_le_bytes(field(RECORD_HEADER_CRC_AT));
    if stored_crc != crc32(&bytes[..RECORD_HEADER_CRC_AT]) {
        return Err(HeaderProblem::NotAHeader);
    }
    let body_len = u32::from_le_bytes(field(8));
    if body_len > WAL_RECORD_BYTES_MAX {
        return Err(HeaderProblem::Oversized(body_len));
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&bytes[12..20]);
    Ok(RecordHeader {
        kind: bytes[4],
        flags: bytes[5],
        body_len,
        lsn: u64::from_le_bytes(lsn),
    })
}

/// Checks the body CRC of a whole record frame (`frame` is exactly `header.frame_len()`
/// bytes, starting with the header).
pub fn frame_body_crc_ok(frame: &[u8]) -> bool {
    super::trailing_crc_ok(frame)
}

/// Builds the body of a batch record, then frames it. Use [`BatchEncoder::finish`] to get
/// the record bytes.
pub struct BatchEncoder {
    buf: Vec<u8>,
    op_count: u32,
    sealed: bool,
}

impl BatchEncoder {
    /// Starts a batch, reserving about `body_bytes_hint` bytes.
    pub fn new(body_bytes_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(RECORD_OVERHEAD + 4 + body_bytes_hint);
        buf.resize(RECORD_HEADER_LEN + 4, 0);
        BatchEncoder {
            buf,
            op_count: 0,
            sealed: false,
        }
    }

    /// Adds an upsert of `vector` under `id`.
    pub fn upsert(&mut self, id: &Id, vector: &[f32]) {
        self.buf.push(OP_UPSERT);
        put_id(&mut self.buf, id);
        put_f32s(&mut self.buf, vector);
        self.op_count += 1;
    }

    /// Adds an upsert of `vector` under `id` with `payload` (JSON text the caller checked,
    /// 1 to [`PAYLOAD_BYTES_MAX`] bytes), or without one when `payload` is `None`.
    pub fn upsert_with_payload(&mut self, id: &Id, vector: &[f32], payload: Option<&[u8]>) {
        let Some(payload) = payload else {
            return self.upsert(id, vector);
        };
        self.buf.push(OP_UPSERT_WITH_PAYLOAD);
        put_id(&mut self.buf, id);
        put_f32s(&mut self.buf, vector);
        put_payload(&mut self.buf, payload);
        self.op_count += 1;
    }

    /// Adds a replacement of `id`'s payload (`None` removes it), keeping its vector.
    pub fn set_payload(&mut self, id: &Id, payload: Option<&[u8]>) {
        self.buf.push(OP_SET_PAYLOAD);
        put_id(&mut self.buf, id);
        put_payload(&mut self.buf, payload.unwrap_or_default());
        self.op_count += 1;
    }

    /// Adds a delete of `id`.
    pub fn delete(&mut self, id: &Id) {
        self.buf.push(OP_DELETE);
        put_id(&mut self.buf, id);
        self.op_count += 1;
    }

    /// The body length so far, to check against [`WAL_RECORD_BYTES_MAX`] before finishing.
    pub fn body_len(&self) -> usize {
        self.body_len_unsealed()
    }

    /// Frames the batch as record `lsn` and returns the record bytes.
    pub fn finish(mut self, lsn: u64) -> Vec<u8> {
        self.seal(lsn, 0);
        self.buf
    }

    /// [`BatchEncoder::finish`] with the header's flags byte set to `flags`.
    pub fn finish_with_flags(mut self, lsn: u64, flags: u8) -> Vec<u8> {
        self.seal(lsn, flags);
        self.buf
    }

    /// Frames the batch in place as record `lsn` with `flags` (header fields, both CRCs) and
    /// returns the record bytes. Sealing again, with another lsn, reframes it.
    pub fn seal(&mut self, lsn: u64, flags: u8) -> &[u8] {
        let body_end = RECORD_HEADER_LEN + self.body_len_unsealed();
        self.buf.truncate(body_end);
        let body_len = u32::try_from(body_end - RECORD_HEADER_LEN).unwrap_or(u32::MAX);
        let count_at = RECORD_HEADER_LEN;
        self.buf[count_at..count_at + 4].copy_from_slice(&self.op_count.to_le_bytes());
        self.buf[0..4].copy_from_slice(&RECORD_SYNC.to_le_bytes());
        self.buf[4] = RecordKind::Batch as u8;
        self.buf[5] = flags;
        self.buf[8..12].copy_from_slice(&body_len.to_le_bytes());
        self.buf[12..20].copy_from_slice(&lsn.to_le_bytes());
        let header_crc = crc32(&self.buf[..RECORD_HEADER_CRC_AT]);
        self.buf[RECORD_HEADER_CRC_AT..RECORD_HEADER_LEN]
            .copy_from_slice(&header_crc.to_le_bytes());
        let body_crc = crc32(&self.buf);
        self.buf.extend_from_slice(&body_crc.to_le_bytes());
        self.sealed = true;
        &self.buf
    }

    /// The record bytes of a sealed batch (empty before [`BatchEncoder::seal`]).
    pub fn record(&self) -> &[u8] {
        if self.sealed {
            &self.buf
        } else {
            &[]
        }
    }

    fn body_len_unsealed(&self) -> usize {
        let trailer = if self.sealed { 4 } else { 0 };
        self.buf.len() - RECORD_HEADER_LEN - trailer
    }
}

/// Appends `payload_len u32` and the payload.
fn put_payload(out: &mut Vec<u8>, payload: &[u8]) {
    // Payloads are checked against PAYLOAD_BYTES_MAX (16 MiB) before encoding.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The bytes an op adds for `payload` (its length field and its bytes), for sizing a batch.
pub fn payload_encoded_len(payload: Option<&[u8]>) -> usize {
    payload.map_or(0, |p| 4 + p.len())
}

/// One operation of a decoded batch. Vectors and payloads stay as bytes borrowed from the
/// record, so replay copies them once, straight into the vector file and the payload log.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    /// Store `vector_le` under `id`, with `payload` or without one (ops 1 and 3).
    Upsert {
        /// The record id.
        id: Id,
        /// `dimension` little-endian f32.
        vector_le: &'a [u8],
        /// The record's JSON payload; `None`: the record has none (an old one is dropped).
        payload: Option<&'a [u8]>,
    },
    /// Remove `id`.
    Delete {
        /// The record id.
        id: Id,
    },
    /// Replace the payload of `id`, if it exists, keeping its vector (op 4).
    SetPayload {
        /// The record id.
        id: Id,
        /// The new JSON payload; `None` removes it.
        payload: Option<&'a [u8]>,
    },
}

impl Op<'_> {
    /// The id the op is about.
    pub fn id(&self) -> &Id {
        match self {
            Op::Upsert { id, .. } | Op::Delete { id } | Op::SetPayload { id, .. } => id,
        }
    }
}

/// Reads `payload_len u32` and that many bytes; an empty payload is `None` when `may_be_empty`.
fn read_payload<'a>(
    r: &mut ByteReader<'a>,
    may_be_empty: bool,
) -> Result<Option<&'a [u8]>, DecodeError> {
    let at = r.position();
    let len = r.u32("payload length")? as usize;
    if len > PAYLOAD_BYTES_MAX || (len == 0 && !may_be_empty) {
        return Err(DecodeError::new(
            at,
            format!("payload length {len} is outside 1..={PAYLOAD_BYTES_MAX}"),
        ));
    }
    let payload = r.take(len, "payload")?;
    Ok((len > 0).then_some(payload))
}

/// Decodes a whole batch body for vectors of `dimension`. The batch is either decoded whole
/// or refused: replay must never apply half a batch.
pub fn decode_batch(body: &[u8], dimension: u32) -> Result<Vec<Op<'_>>, DecodeError> {
    let mut ops = Vec::new();
    decode_batch_into(body, dimension, &mut ops)?;
    Ok(ops)
}

/// [`decode_batch`] into `ops` (cleared first), so that replay reuses one vector for every
/// record instead of allocating one per record. On error `ops` holds no complete batch and
/// must not be applied.
pub fn decode_batch_into<'a>(
    body: &'a [u8],
    dimension: u32,
    ops: &mut Vec<Op<'a>>,
) -> Result<(), DecodeError> {
    ops.clear();
    let mut r = ByteReader::new(body);
    let op_count = r.u32("op count")? as usize;
    // Each op takes at least an op byte and the shortest id: refuse counts the body cannot
    // hold before reserving memory for them.
    #[cfg(feature = "planted-bugs")]
    let trusted = crate::planted::active(crate::planted::Bug::TrustLength);
    #[cfg(not(feature = "planted-bugs"))]
    let trusted = false;
    if !trusted && op_count > r.remaining() / (1 + ID_ENCODED_BYTES_MIN) {
        return Err(DecodeError::new(
            0,
            format!(
                "op count {op_count} does not fit in a {}-byte body",
                body.len()
            ),
        ));
    }
    let vector_bytes = dimension as usize * 4;
    ops.reserve(op_count);
    for _ in 0..op_count {
        let at = r.position();
        let op_byte = r.u8("op")?;
        let op = match op_byte {
            OP_UPSERT | OP_UPSERT_WITH_PAYLOAD => {
                let id = r.id()?;
                let vector_le = r.take(vector_bytes, "vector")?;
                let payload = match op_byte {
                    OP_UPSERT => None,
                    _ => read_payload(&mut r, false)?,
                };
                Op::Upsert {
                    id,
                    vector_le,
                    payload,
                }
            }
            OP_DELETE => Op::Delete { id: r.id()? },
            OP_SET_PAYLOAD => {
                let id = r.id()?;
                let payload = read_payload(&mut r, true)?;
                Op::SetPayload { id, payload }
            }
            other => return Err(DecodeError::new(at, format!("unknown op {other}"))),
        };
        ops.push(op);
    }
    r.expect_end("the batch's ops")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_record(lsn: u64) -> Vec<u8> {
        let mut enc = BatchEncoder::new(64);
        enc.upsert(&Id::from("a"), &[1.0, -2.5]);
        enc.delete(&Id::Int(7));
        enc.upsert_with_payload(&Id::Int(8), &[0.0, 1.0], Some(b"{\"k\":1}"));
        enc.set_payload(&Id::from("a"), Some(b"[]"));
        enc.set_payload(&Id::Int(8), None);
        enc.finish(lsn)
    }

    #[test]
    fn decoding_into_a_reused_vector_keeps_only_the_last_batch() {
        // Replay decodes every record into one vector: what an earlier (longer) record left
        // there must never be applied with a later one.
        let long = sample_record(1);
        let mut enc = BatchEncoder::new(64);
        enc.delete(&Id::Int(3));
        let short = enc.finish(2);
        let body = |rec: &[u8]| rec[RECORD_HEADER_LEN..rec.len() - 4].to_vec();
        let (long, short) = (body(&long), body(&short));
        let mut ops = Vec::new();
        decode_batch_into(&long, 2, &mut ops).expect("long");
        assert_eq!(ops.len(), 5);
        decode_batch_into(&short, 2, &mut ops).expect("short");
        assert_eq!(ops, vec![Op::Delete { id: Id::Int(3) }]);
        assert_eq!(decode_batch(&short, 2).as_deref(), Ok(&ops[..]));
    }

    #[test]
    fn batch_round_trips() {
        let rec = sample_record(9);
        let header = decode_record_header(&rec).expect("header");
        assert_eq!(header.lsn, 9);
        assert_eq!(header.kind, RecordKind::Batch as u8);
        assert_eq!(header.frame_len(), rec.len() as u64);
        assert!(frame_body_crc_ok(&rec));
        let body = &rec[RECORD_HEADER_LEN..rec.len() - 4];
        let ops = decode_batch(body, 2).expect("decode");
        let mut expected = Vec::new();
        put_f32s(&mut expected, &[1.0, -2.5]);
        let mut second = Vec::new();
        put_f32s(&mut second, &[0.0, 1.0]);
        assert_eq!(
            ops,
            vec![
                Op::Upsert {
                    id: Id::from("a"),
                    vector_le: &expected,
                    payload: None
                },
                Op::Delete { id: Id::Int(7) },
                Op::Upsert {
                    id: Id::Int(8),
                    vector_le: &second,
                    payload: Some(b"{\"k\":1}")
                },
                Op::SetPayload {
                    id: Id::from("a"),
                    payload: Some(b"[]")
                },
                Op::SetPayload {
                    id: Id::Int(8),
                    payload: None
                },
            ]
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let rec = sample_record(3);
        for bit in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let intact = match decode_record_header(&bad) {
                Ok(h) => h.frame_len() == bad.len() as u64 && frame_body_crc_ok(&bad),
                Err(_) => false,
            };
            assert!(!intact, "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(384, 5);
        assert_eq!(
            decode_header(&h),
            Ok(WalHeader {
                version: WAL_VERSION,
                dimension: 384,
                uid: 5,
            })
        );
        let mut bad = h;
        bad[13] ^= 1;
        assert!(decode_header(&bad).is_err());
        assert!(decode_header(&h[..31]).is_err());
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut rec = sample_record(1);
        rec[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32(&rec[..RECORD_HEADER_CRC_AT]);
        rec[RECORD_HEADER_CRC_AT..RECORD_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_record_header(&rec),
            Err(HeaderProblem::Oversized(u32::MAX))
        );
    }

    #[test]
    fn payload_lengths_are_checked() {
        let mut enc = BatchEncoder::new(64);
        enc.upsert_with_payload(&Id::Int(1), &[0.0, 0.0], Some(b"1"));
        let rec = enc.finish(1);
        let mut body = rec[RECORD_HEADER_LEN..rec.len() - 4].to_vec();
        let len_at = body.len() - 5;
        for bad in [0u32, (PAYLOAD_BYTES_MAX + 1) as u32, 2] {
            body[len_at..len_at + 4].copy_from_slice(&bad.to_le_bytes());
            assert!(decode_batch(&body, 2).is_err(), "length {bad}");
        }
    }

    #[test]
    fn batch_with_impossible_op_count_is_refused() {
        let mut body = Vec::new();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_batch(&body, 4).is_err());
    }
}
