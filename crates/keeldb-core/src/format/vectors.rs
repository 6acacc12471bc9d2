//! The vector file (`vectors.dat`): a header page, then fixed-size slots of f32.
//!
//! ```text
//!   0  magic        [u8; 8]  "KEELVEC\0"
//!   8  version      u32      VECTORS_VERSION
//!  12  dimension    u32
//!  16  uid          u32      the collection's (collection.json), 0 before format 3
//!  20  reserved     [u8; 8]  zero
//!  28  header_crc   u32      crc32 of bytes 0..28
//!  32  zero padding up to VECTORS_HEADER_LEN
//!  VECTORS_HEADER_LEN + slot * dimension * 4: slot `slot`, dimension little-endian f32
//! ```
//!
//! The header takes a whole page so that every slot is 4-byte aligned in the mapping.

use super::{crc32, ByteReader, DecodeError};

/// First bytes of a vector file.
pub const VECTORS_MAGIC: [u8; 8] = *b"KEELVEC\0";
/// The vector file format this build writes and the newest it reads.
pub const VECTORS_VERSION: u32 = 1;
/// Bytes before the first slot: one page.
pub const VECTORS_HEADER_LEN: usize = 4096;
const VECTORS_HEADER_CRC_AT: usize = 28;

const _: () = assert!(
    VECTORS_HEADER_LEN.is_multiple_of(4) && VECTORS_HEADER_LEN >= VECTORS_HEADER_CRC_AT + 4
);

/// Encodes the header page of a vector file.
pub fn encode_header(dimension: u32, uid: u32) -> Vec<u8> {
    let mut out = vec![0u8; VECTORS_HEADER_LEN];
    out[0..8].copy_from_slice(&VECTORS_MAGIC);
    out[8..12].copy_from_slice(&VECTORS_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&dimension.to_le_bytes());
    out[16..20].copy_from_slice(&uid.to_le_bytes());
    let crc = crc32(&out[..VECTORS_HEADER_CRC_AT]);
    out[VECTORS_HEADER_CRC_AT..VECTORS_HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a vector file header, returning `(version, dimension, uid)`.
pub fn decode_header(bytes: &[u8]) -> Result<(u32, u32, u32), DecodeError> {
    if bytes.len() < VECTORS_HEADER_LEN {
        return Err(DecodeError::new(
            0,
            "vector file is shorter than its header page",
        ));
    }
    if bytes[0..8] != VECTORS_MAGIC {
        return Err(DecodeError::new(0, "not a keeldb vector file (bad magic)"));
    }
    let mut r = ByteReader::new(&bytes[8..VECTORS_HEADER_CRC_AT + 4]);
    let version = r.u32("version")?;
    let dimension = r.u32("dimension")?;
    let uid = r.u32("uid")?;
    r.take(8, "reserved")?;
    if r.u32("header crc")? != crc32(&bytes[..VECTORS_HEADER_CRC_AT]) {
        return Err(DecodeError::new(
            VECTORS_HEADER_CRC_AT,
            "vector file header checksum mismatch",
        ));
    }
    Ok((version, dimension, uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_flips() {
        let h = encode_header(768, 9);
        assert_eq!(decode_header(&h), Ok((VECTORS_VERSION, 768, 9)));
        for bit in 0..(VECTORS_HEADER_CRC_AT + 4) * 8 {
            let mut bad = h.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&bad).is_err(), "bit {bit}");
        }
    }
}
