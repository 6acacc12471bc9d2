//! Byte layouts of every file keeldb writes: encoding, decoding and checksums.
//!
//! Invariant: nothing here does I/O. Decoders take bytes and return values or a
//! [`DecodeError`] naming the offset of the first bad byte; they never panic and never
//! allocate more than the input could hold, whatever the input. docs/FORMAT.md mirrors
//! this module; all integers are little-endian and fixed-width.

pub mod config;
pub mod index;
pub mod json;
pub mod payload_index;
pub mod payload_log;
pub mod vectors;
pub mod wal;

use crate::types::{Id, IdRef, ID_INTEGER_MAX, ID_STRING_BYTES_MAX};

/// Why a byte string could not be decoded, and where (relative to the start of what the
/// decoder was given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset of the first byte that does not check out.
    pub offset: u64,
    /// What was wrong, for a person.
    pub reason: String,
}

impl DecodeError {
    pub(crate) fn new(offset: usize, reason: impl Into<String>) -> Self {
        DecodeError {
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}

/// The format version of a file that starts with `magic` followed by a u32 version, or
/// `None` when the magic does not match. Lets a caller refuse a newer file as such before
/// decoding it with the wrong layout.
pub fn peek_version(bytes: &[u8], magic: &[u8; 8]) -> Option<u32> {
    let version = bytes.get(8..12)?;
    (bytes[..8] == magic[..])
        .then(|| u32::from_le_bytes([version[0], version[1], version[2], version[3]]))
}

/// Checksum used by every file: CRC-32 (ISO-HDLC, the zlib polynomial) via crc32fast.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Bytes [`Chunked`] gathers before it hands them on. Small enough that its buffer (with
/// room for the entry that crosses this size) is one of the allocator's large blocks, which
/// it keeps and serves again, not a huge one: each checkpoint encodes two indexes, and a
/// 1 MiB chunk, grown by doubling to 2 MiB and freed after each, came back as fresh pages
/// every time (on this project's virtual machines a fresh 2 MiB page costs milliseconds).
#[cfg(not(feature = "sim"))]
pub const CHUNK_BYTES: usize = 256 << 10;
/// Under the simulated disk, a few dozen: the crash checkers' indexes are small, and this
/// way they also crash and fail between the chunks of one index file.
#[cfg(feature = "sim")]
pub const CHUNK_BYTES: usize = 48;

/// Room past [`CHUNK_BYTES`] for the entry that crosses it: more than the longest entry of
/// either index (an encoded id and a slot, or a frame's place).
const CHUNK_ENTRY_ROOM: usize = 2 * ID_ENCODED_BYTES_MAX;

/// Where an encoder of a file of any size puts its bytes: it appends to [`Chunked::buf`],
/// calls [`Chunked::spill`] after each entry, and ends with [`Chunked::finish`]. The bytes
/// go to `flush` about [`CHUNK_BYTES`] at a time (the caller writes them out, so one buffer
/// of that size serves a file of millions of entries), and the CRC-32 of all of them is
/// appended at the end.
pub struct Chunked<'f, E> {
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    flush: &'f mut dyn FnMut(&[u8]) -> Result<(), E>,
}

impl<'f, E> Chunked<'f, E> {
    /// An empty output that hands its chunks to `flush`.
    pub fn new(flush: &'f mut dyn FnMut(&[u8]) -> Result<(), E>) -> Self {
        Chunked {
            // Room for a chunk and the entry that crosses its end: it never grows.
            buf: Vec::with_capacity(CHUNK_BYTES + CHUNK_ENTRY_ROOM),
            crc: crc32fast::Hasher::new(),
            flush,
        }
    }

    /// The bytes not handed on yet, to append to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Hands the bytes gathered on once they reach [`CHUNK_BYTES`].
    pub fn spill(&mut self) -> Result<(), E> {
        debug_assert!(
            self.buf.capacity() <= CHUNK_BYTES + CHUNK_ENTRY_ROOM,
            "an entry of over CHUNK_ENTRY_ROOM bytes grew the chunk buffer"
        );
        if self.buf.len() < CHUNK_BYTES {
            return Ok(());
        }
        self.crc.update(&self.buf);
        (self.flush)(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Appends the CRC-32 of every byte before it and hands the rest on.
    pub fn finish(mut self) -> Result<(), E> {
        self.crc.update(&self.buf);
        let crc = self.crc.finalize();
        self.buf.extend_from_slice(&crc.to_le_bytes());
        (self.flush)(&self.buf)
    }
}

/// The bytes an encoder built on [`Chunked`] emits, gathered into one `Vec`.
pub(crate) fn collect_chunks(
    encode: impl FnOnce(
        &mut dyn FnMut(&[u8]) -> Result<(), std::convert::Infallible>,
    ) -> Result<(), std::convert::Infallible>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(()) = encode(&mut |chunk: &[u8]| {
        out.extend_from_slice(chunk);
        Ok(())
    });
    out
}

/// Whether the last 4 bytes of `frame` are the CRC-32 of the bytes before them: the trailer
/// of a log record and of a payload log frame.
pub fn trailing_crc_ok(frame: &[u8]) -> bool {
    let Some(crc_at) = frame.len().checked_sub(4) else {
        return false;
    };
    let stored = u32::from_le_bytes([
        frame[crc_at],
        frame[crc_at + 1],
        frame[crc_at + 2],
        frame[crc_at + 3],
    ]);
    stored == crc32(&frame[..crc_at])
}

/// Tag byte of a string id.
const ID_TAG_STR: u8 = 1;
/// Tag byte of an integer id.
const ID_TAG_INT: u8 = 2;
/// The fewest bytes an encoded id takes (a one-byte string: tag, length, byte).
pub(crate) const ID_ENCODED_BYTES_MIN: usize = 1 + 2 + 1;
/// The most bytes an encoded id takes (the longest string: tag, length, bytes).
pub(crate) const ID_ENCODED_BYTES_MAX: usize = 1 + 2 + crate::types::ID_STRING_BYTES_MAX;

/// Appends an id: `tag u8`, then `len u16 + UTF-8 bytes` for a string, `u64` for an integer.
pub(crate) fn put_id(out: &mut Vec<u8>, id: &Id) {
    put_id_ref(out, id.into());
}

/// [`put_id`] of a borrowed id.
pub(crate) fn put_id_ref(out: &mut Vec<u8>, id: IdRef<'_>) {
    match id {
        IdRef::Str(s) => {
            out.push(ID_TAG_STR);
            // Ids are validated to at most ID_STRING_BYTES_MAX (512) bytes before encoding.
            let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        IdRef::Int(n) => {
            out.push(ID_TAG_INT);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// The number of bytes `put_id` writes for `id`.
pub(crate) fn id_encoded_len(id: &Id) -> usize {
    match id {
        Id::Str(s) => 1 + 2 + s.len(),
        Id::Int(_) => 1 + 8,
    }
}

/// A bounds-checked little-endian reader over a byte slice. Every read either returns the
/// value or a [`DecodeError`] at the current offset; nothing here can panic.
pub(crate) struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        ByteReader { bytes, pos: 0 }
    }

    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    // The readers are `#[inline]` and their error paths cold: opening decodes a million ids
    // through them, and called across codegen units they cost more than the decoding.
    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.short(n, what));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    #[cold]
    #[inline(never)]
    fn short(&self, n: usize, what: &str) -> DecodeError {
        DecodeError::new(
            self.pos,
            format!("{what} needs {n} bytes, only {} remain", self.remaining()),
        )
    }

    #[inline]
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    #[inline]
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads an id written by [`put_id`], checking its limits.
    #[inline]
    pub(crate) fn id(&mut self) -> Result<Id, DecodeError> {
        let start = self.pos;
        match self.u8("id tag")? {
            ID_TAG_STR => {
                let len = usize::from(self.u16("string id length")?);
                if len == 0 || len > ID_STRING_BYTES_MAX {
                    return Err(DecodeError::new(start, format!("string id length {len}")));
                }
                let bytes = self.take(len, "string id")?;
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| DecodeError::new(start, "string id is not UTF-8"))?;
                Ok(Id::Str(s.into()))
            }
            ID_TAG_INT => {
                let n = self.u64("integer id")?;
                // `Id::validate`'s rule for integers, without building its error.
                if n > ID_INTEGER_MAX {
                    return Err(DecodeError::new(
                        start,
                        format!("integer id {n} out of range"),
                    ));
                }
                Ok(Id::Int(n))
            }
            tag => Err(DecodeError::new(start, format!("unknown id tag {tag}"))),
        }
    }

    pub(crate) fn expect_end(&self, what: &str) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(DecodeError::new(
                self.pos,
                format!("{} unexpected bytes after {what}", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// Appends `values` as little-endian f32.
pub(crate) fn put_f32s(out: &mut Vec<u8>, values: &[f32]) {
    // On little-endian targets the floats' memory is their encoding: one copy, without
    // zeroing the space first (pushing four bytes at a time, a capacity check per float,
    // cost half a microsecond per 384-float vector on the write path).
    #[cfg(target_endian = "little")]
    out.extend_from_slice(bytemuck::cast_slice(values));
    #[cfg(not(target_endian = "little"))]
    {
        let start = out.len();
        out.resize(start + values.len() * 4, 0);
        for (dst, v) in out[start..].chunks_exact_mut(4).zip(values) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// How many zero bytes `bytes` ends with. A chunk at a time with a test the compiler
/// vectorizes: open measures the writer's zero-filled space (up to 8 MiB) after a crash this
/// way, where a byte-by-byte scan cost milliseconds.
pub fn trailing_zeros(bytes: &[u8]) -> usize {
    const CHUNK: usize = 64;
    let mut skipped = 0;
    for chunk in bytes.rchunks(CHUNK) {
        if chunk.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return skipped + chunk.iter().rev().take_while(|&&b| b == 0).count();
        }
        skipped += chunk.len();
    }
    skipped
}

/// The index of the first component of `values` that is NaN or infinite. Checks a chunk of
/// floats at a time with a branch-free test the compiler vectorizes, and looks for the
/// culprit only in a chunk that has one: every write checks every component.
pub fn first_non_finite(values: &[f32]) -> Option<usize> {
    const CHUNK: usize = 64;
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        // A float is NaN or infinite exactly when all its exponent bits are set.
        let bad = chunk.iter().fold(0u32, |acc, v| {
            acc | u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
        });
        if bad != 0 {
            return chunk
                .iter()
                .position(|v| !v.is_finite())
                .map(|j| c * CHUNK + j);
        }
    }
    None
}

/// Decodes little-endian f32 bytes into `out` (whose length is `bytes.len() / 4`).
pub fn f32s_from_le(bytes: &[u8], out: &mut [f32]) {
    for (dst, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *dst = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
}

/// Asserts that `decode` refuses `bytes` cut at every length and with any single bit flipped:
/// the property every checksummed file format here must have.
#[cfg(test)]
pub(crate) fn assert_every_cut_and_flip_refused<T, E>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
) {
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(decode(&bad).is_err(), "bit {bit}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_truncation_is_an_error() {
        for id in [
            Id::from("a"),
            Id::from("é".repeat(256).as_str()),
            Id::Int(0),
            Id::Int(42),
        ] {
            let mut buf = Vec::new();
            put_id(&mut buf, &id);
            assert_eq!(buf.len(), id_encoded_len(&id));
            assert_eq!(ByteReader::new(&buf).id(), Ok(id.clone()));
            for cut in 0..buf.len() {
                assert!(ByteReader::new(&buf[..cut]).id().is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn first_non_finite_finds_the_first_bad_component_in_any_chunk() {
        let mut v = vec![0.5f32; 200];
        assert_eq!(first_non_finite(&v), None);
        // Largest finite values and subnormals are fine; every NaN and infinity is found,
        // in the first chunk, a later one and the short last one.
        v[3] = f32::MAX;
        v[4] = -f32::MIN_POSITIVE / 2.0;
        assert_eq!(first_non_finite(&v), None);
        for (at, bad) in [
            (0, f32::NAN),
            (70, f32::INFINITY),
            (199, f32::NEG_INFINITY),
            (130, -f32::NAN),
        ] {
            let mut w = v.clone();
            w[at] = bad;
            assert_eq!(first_non_finite(&w), Some(at), "at {at}");
            // With a second one after it, the first is still the one named.
            w[199] = f32::NAN;
            assert_eq!(first_non_finite(&w), Some(at), "at {at}, then 199");
        }
    }

    #[test]
    fn zero_runs_are_counted_exactly_across_chunk_boundaries() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            for at in 0..len {
                let mut bytes = vec![0u8; len];
                bytes[at] = 7;
                assert_eq!(trailing_zeros(&bytes), len - at - 1, "len {len}, at {at}");
            }
            let zeros = vec![0u8; len];
            assert_eq!(trailing_zeros(&zeros), len);
        }
    }

    #[test]
    fn f32s_round_trip_through_little_endian_bytes() {
        let values = [1.0f32, -2.5, f32::MIN_POSITIVE, -0.0, 3.0e38];
        let mut buf = vec![7u8];
        put_f32s(&mut buf, &values);
        assert_eq!(buf.len(), 1 + values.len() * 4);
        assert_eq!(&buf[1..5], &1.0f32.to_le_bytes());
        let mut back = [0f32; 5];
        f32s_from_le(&buf[1..], &mut back);
        assert_eq!(back.map(f32::to_bits), values.map(f32::to_bits));
    }
}
