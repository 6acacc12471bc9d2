//! Every byte format round-trips for random contents, and no cut and no single bit flip of
//! what keeldb wrote is ever taken for something else: random batches, logs, indexes,
//! payload frames, payload snapshots and headers (the unit tests check one fixed sample of
//! each; these check many random ones).

use std::path::Path;

use keeldb_core::format::index::{self, IndexSnapshot, INDEX_VERSION};
use keeldb_core::format::payload_index::{
    self, PayloadLoc, PayloadSnapshot, PAYLOAD_INDEX_VERSION,
};
use keeldb_core::format::payload_log::{
    self, decode_frame_body, decode_frame_header, encode_frame, frame_crc_ok, FrameKind,
    FRAME_HEADER_LEN, FRAME_OVERHEAD, PAYLOAD_LOG_HEADER_LEN,
};
use keeldb_core::format::wal::{
    self, decode_batch, decode_record_header, frame_body_crc_ok, BatchEncoder, Op,
    RECORD_FLAG_AFTER_SYNC, RECORD_HEADER_LEN, WAL_HEADER_LEN,
};
use keeldb_core::format::{config, vectors};
use keeldb_core::types::{ID_INTEGER_MAX, ID_STRING_BYTES_MAX};
use keeldb_core::wal::replay::replay;
use keeldb_core::{Id, Metric, RecoveryPolicy};
use proptest::prelude::*;

/// Any valid id: a string of 1 to 512 UTF-8 bytes (any scalar values) or a safe integer.
fn any_id() -> impl Strategy<Value = Id> {
    prop_oneof![
        (0..=ID_INTEGER_MAX).prop_map(Id::Int),
        prop::collection::vec(any::<char>(), 1..40).prop_filter_map("id too long", |chars| {
            let s: String = chars.into_iter().collect();
            (s.len() <= ID_STRING_BYTES_MAX).then(|| Id::Str(s.into()))
        }),
        // Long ids near the limit.
        "[a-z]{500,512}".prop_map(|s| Id::Str(s.into())),
    ]
}

/// One operation: `Some(vector bits)` is an upsert, `None` a delete. Vectors are raw bit
/// patterns: the format carries any f32, NaNs and subnormals included.
type RawOp = (Id, Option<Vec<u32>>);

fn any_batch(dimension: usize) -> impl Strategy<Value = Vec<RawOp>> {
    prop::collection::vec(
        (
            any_id(),
            prop::option::weighted(0.7, prop::collection::vec(any::<u32>(), dimension)),
        ),
        1..12,
    )
}

fn encode(ops: &[RawOp], lsn: u64) -> Vec<u8> {
    let mut enc = BatchEncoder::new(256);
    for (id, vector) in ops {
        match vector {
            Some(bits) => {
                let v: Vec<f32> = bits.iter().map(|b| f32::from_bits(*b)).collect();
                enc.upsert(id, &v);
            }
            None => enc.delete(id),
        }
    }
    enc.finish_with_flags(lsn, RECORD_FLAG_AFTER_SYNC)
}

/// Whether `frame` reads as one whole, checksum-valid record.
fn intact(frame: &[u8]) -> bool {
    match decode_record_header(frame) {
        Ok(h) => h.frame_len() == frame.len() as u64 && frame_body_crc_ok(frame),
        Err(_) => false,
    }
}

/// The ops a decoded body holds, back in `RawOp` form (vector bytes as u32 bit patterns).
fn raw(ops: &[Op<'_>]) -> Vec<RawOp> {
    ops.iter()
        .map(|op| match op {
            Op::Upsert {
                id,
                vector_le,
                payload: None,
            } => (
                id.clone(),
                Some(
                    vector_le
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
            ),
            Op::Delete { id } => (id.clone(), None),
            other => panic!("the generator writes no payload ops, decoded {other:?}"),
        })
        .collect()
}

/// A log image of `batches` (lsns 1, 2, ...) and where each record starts and ends.
fn log_image(dimension: u32, batches: &[Vec<RawOp>]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut image = wal::encode_header(dimension, 0).to_vec();
    let mut frames = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let start = image.len();
        image.extend(encode(batch, i as u64 + 1));
        frames.push((start, image.len()));
    }
    (image, frames)
}

/// Replays `image`, returning the lsn and raw ops of every applied record, or the error code.
fn replayed(
    image: &[u8],
    dimension: u32,
    policy: RecoveryPolicy,
) -> Result<Vec<(u64, Vec<RawOp>)>, &'static str> {
    let mut seen = Vec::new();
    replay(
        Path::new("p.wal"),
        image,
        dimension,
        0,
        policy,
        |lsn, ops| {
            seen.push((lsn, raw(ops)));
            Ok(())
        },
    )
    .map_err(|e| e.code())?;
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn batch_records_round_trip(
        (dimension, ops) in (1usize..24).prop_flat_map(|d| (Just(d), any_batch(d))),
        lsn in 1u64..=keeldb_core::types::LSN_MAX,
    ) {
        let record = encode(&ops, lsn);
        let header = decode_record_header(&record).expect("header");
        prop_assert_eq!(header.lsn, lsn);
        prop_assert_eq!(header.frame_len(), record.len() as u64);
        prop_assert!(frame_body_crc_ok(&record));
        let body = &record[RECORD_HEADER_LEN..record.len() - 4];
        let decoded = decode_batch(body, dimension as u32).expect("decode");
        prop_assert_eq!(raw(&decoded), ops);
    }

    #[test]
    fn every_cut_and_every_bit_flip_of_a_batch_record_is_detected(
        (dimension, ops) in (1usize..6).prop_flat_map(|d| (Just(d), any_batch(d))),
    ) {
        let record = encode(&ops, 7);
        for cut in 0..record.len() {
            prop_assert!(!intact(&record[..cut]), "cut at {}", cut);
        }
        let mut bad = record.clone();
        for bit in 0..record.len() * 8 {
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!intact(&bad), "flip of bit {} (dimension {})", bit, dimension);
            bad[bit / 8] ^= 1 << (bit % 8);
        }
    }

    #[test]
    fn a_log_cut_anywhere_replays_exactly_the_whole_records_before_the_cut(
        batches in prop::collection::vec(any_batch(3), 1..6),
        cut_seed in any::<prop::sample::Index>(),
        policy in prop_oneof![Just(RecoveryPolicy::Salvage), Just(RecoveryPolicy::Strict)],
    ) {
        let (image, frames) = log_image(3, &batches);
        let cut = WAL_HEADER_LEN + cut_seed.index(image.len() - WAL_HEADER_LEN + 1);
        let whole = frames.iter().filter(|(_, end)| *end <= cut).count();
        let expected: Vec<_> = batches[..whole]
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64 + 1, b.clone()))
            .collect();
        prop_assert_eq!(replayed(&image[..cut], 3, policy), Ok(expected));
    }

    #[test]
    fn a_bit_flip_anywhere_in_a_log_never_yields_a_wrong_record(
        batches in prop::collection::vec(any_batch(2), 2..6),
        bit_seed in any::<prop::sample::Index>(),
    ) {
        let (mut image, frames) = log_image(2, &batches);
        let bit = WAL_HEADER_LEN * 8 + bit_seed.index((image.len() - WAL_HEADER_LEN) * 8);
        image[bit / 8] ^= 1 << (bit % 8);
        let damaged = frames
            .iter()
            .position(|(start, end)| (*start..*end).contains(&(bit / 8)))
            .expect("the flip is in some record");
        let last = damaged == frames.len() - 1;
        // Salvage: every record but the damaged one (whether mid-log or torn tail).
        let salvaged = replayed(&image, 2, RecoveryPolicy::Salvage).expect("salvage opens");
        let expected: Vec<_> = batches
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != damaged)
            .map(|(i, b)| (i as u64 + 1, b.clone()))
            .collect();
        prop_assert_eq!(&salvaged, &expected);
        // Strict: a damaged last record is a torn tail; damage before it is refused.
        let strict = replayed(&image, 2, RecoveryPolicy::Strict);
        if last {
            prop_assert_eq!(strict, Ok(expected));
        } else {
            prop_assert_eq!(strict, Err("KEEL_CORRUPT"));
        }
    }

    #[test]
    fn index_snapshots_round_trip_and_every_cut_and_flip_is_detected(
        snapshot in any_snapshot(),
    ) {
        let bytes = index::encode(&snapshot);
        prop_assert_eq!(index::decode(&bytes), Ok(snapshot));
        refused_when_cut_or_flipped(&bytes, |b| index::decode(b).is_err())?;
    }

    #[test]
    fn file_headers_round_trip_and_every_flip_is_detected(dimension in any::<u32>(), uid in any::<u32>()) {
        let wal_header = wal::encode_header(dimension, uid);
        prop_assert_eq!(wal::decode_header(&wal_header).map(|h| (h.dimension, h.uid)), Ok((dimension, uid)));
        let vec_header = vectors::encode_header(dimension, uid);
        prop_assert_eq!(vectors::decode_header(&vec_header), Ok((vectors::VECTORS_VERSION, dimension, uid)));
        for bit in 0..32 * 8 {
            let mut bad = wal_header;
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(wal::decode_header(&bad).is_err(), "log header bit {}", bit);
            let mut bad = vec_header.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(vectors::decode_header(&bad).is_err(), "vector header bit {}", bit);
        }
        for cut in 0..32 {
            prop_assert!(wal::decode_header(&wal_header[..cut]).is_err());
            prop_assert!(vectors::decode_header(&vec_header[..cut]).is_err());
        }
    }

    #[test]
    fn configs_round_trip_and_cuts_are_refused(
        dimension in 1u32..=keeldb_core::types::DIMENSION_MAX,
        metric in prop_oneof![Just(Metric::Cosine), Just(Metric::Dot), Just(Metric::Euclidean)],
        uid in 1u32..,
    ) {
        let c = config::CollectionConfig { format_version: 3, dimension, metric, uid };
        let bytes = config::encode(&c);
        prop_assert_eq!(config::decode(&bytes), Ok(c));
        prop_assert_eq!(config::peek_format_version(&bytes), Some(3));
        // JSON has no checksum: a cut that only drops trailing whitespace still parses; any
        // cut into the object itself must not.
        let object_end = bytes.iter().rposition(|b| *b == b'}').expect("closing brace") + 1;
        for cut in 0..object_end {
            prop_assert!(config::decode(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn payload_frames_round_trip_and_every_cut_and_flip_is_detected(
        id in any_id(),
        lsn in 0u64..=keeldb_core::types::LSN_MAX,
        payload in prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 1..300)),
    ) {
        let kind = match payload {
            Some(_) => FrameKind::Store,
            None => FrameKind::Delete,
        };
        let mut frame = Vec::new();
        let len = encode_frame(&mut frame, kind, lsn, &id, payload.as_deref().unwrap_or_default());
        prop_assert_eq!(len as usize, frame.len());
        let header = decode_frame_header(&frame).expect("header");
        prop_assert_eq!((header.kind, header.lsn, header.frame_len()), (kind as u8, lsn, frame.len() as u64));
        prop_assert!(frame_crc_ok(&frame));
        let body = decode_frame_body(kind, &frame[FRAME_HEADER_LEN..frame.len() - 4]).expect("body");
        prop_assert_eq!(&body.id, &id);
        prop_assert_eq!(body.payload, payload.as_deref());
        // A reader holding a cut frame sees a short header or a frame longer than it has.
        for cut in 0..frame.len() {
            let whole = decode_frame_header(&frame[..cut])
                .is_ok_and(|h| h.frame_len() <= cut as u64);
            prop_assert!(!whole, "cut at {}", cut);
        }
        // A flip anywhere: the header is refused, or it is the same header and the frame's
        // checksum fails. Never a valid frame saying something else.
        let mut bad = frame.clone();
        for bit in 0..frame.len() * 8 {
            bad[bit / 8] ^= 1 << (bit % 8);
            match decode_frame_header(&bad) {
                Err(_) => {}
                Ok(h) => {
                    prop_assert_eq!(h, header, "flip of bit {} changed a checked header", bit);
                    prop_assert!(!frame_crc_ok(&bad), "flip of bit {} kept the checksum", bit);
                }
            }
            bad[bit / 8] ^= 1 << (bit % 8);
        }
    }

    #[test]
    fn payload_log_headers_round_trip_and_every_cut_and_flip_is_detected(generation in any::<u64>(), uid in any::<u32>()) {
        let header = payload_log::encode_header(generation, uid);
        let decoded = payload_log::decode_header(&header).expect("header");
        prop_assert_eq!((decoded.version, decoded.generation, decoded.uid), (payload_log::PAYLOAD_LOG_VERSION, generation, uid));
        for cut in 0..PAYLOAD_LOG_HEADER_LEN {
            prop_assert!(payload_log::decode_header(&header[..cut]).is_err(), "cut at {}", cut);
        }
        for bit in 0..PAYLOAD_LOG_HEADER_LEN * 8 {
            let mut bad = header;
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(payload_log::decode_header(&bad).is_err(), "flip of bit {}", bit);
        }
    }

    #[test]
    fn payload_snapshots_round_trip_and_every_cut_and_flip_is_detected(
        snapshot in any_payload_snapshot(),
    ) {
        let bytes = payload_index::encode(&snapshot);
        prop_assert_eq!(payload_index::decode(&bytes), Ok(snapshot));
        refused_when_cut_or_flipped(&bytes, |b| payload_index::decode(b).is_err())?;
    }
}

/// Whether `refused` holds for every proper prefix of `bytes` and for `bytes` with any one
/// bit flipped (a file with a whole-file checksum).
fn refused_when_cut_or_flipped(
    bytes: &[u8],
    refused: impl Fn(&[u8]) -> bool,
) -> Result<(), TestCaseError> {
    for cut in 0..bytes.len() {
        prop_assert!(refused(&bytes[..cut]), "cut at {}", cut);
    }
    let mut bad = bytes.to_vec();
    for bit in 0..bytes.len() * 8 {
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(refused(&bad), "flip of bit {}", bit);
        bad[bit / 8] ^= 1 << (bit % 8);
    }
    Ok(())
}

/// A valid payload snapshot: distinct ids, each frame inside the covered log.
fn any_payload_snapshot() -> impl Strategy<Value = PayloadSnapshot> {
    (
        prop::collection::hash_set(any_id(), 0..8),
        any::<u64>(),
        0u64..=keeldb_core::types::LSN_MAX,
        prop::collection::vec((0u64..1 << 20, (FRAME_OVERHEAD as u32 + 2)..4096), 8),
    )
        .prop_map(|(ids, generation, checkpoint_lsn, locs)| {
            let entries: Vec<(Id, PayloadLoc)> = ids
                .into_iter()
                .zip(locs)
                .map(|(id, (offset, frame_len))| {
                    let offset = PAYLOAD_LOG_HEADER_LEN as u64 + offset;
                    (id, PayloadLoc { offset, frame_len })
                })
                .collect();
            let log_end = entries
                .iter()
                .map(|(_, l)| l.offset + u64::from(l.frame_len))
                .max()
                .unwrap_or(PAYLOAD_LOG_HEADER_LEN as u64);
            PayloadSnapshot {
                version: PAYLOAD_INDEX_VERSION,
                generation,
                checkpoint_lsn,
                log_end,
                entries,
                uid: (checkpoint_lsn as u32) ^ 0x5eed,
            }
        })
}

/// A valid index: distinct ids, each slot below the high-water mark used exactly once
/// (live or free), in a random order.
fn any_snapshot() -> impl Strategy<Value = IndexSnapshot> {
    (
        prop::collection::hash_set(any_id(), 0..8),
        0usize..5,
        any::<u32>(),
        0u64..=keeldb_core::types::LSN_MAX,
    )
        .prop_flat_map(|(ids, free, dimension, lsn)| {
            let ids: Vec<Id> = ids.into_iter().collect();
            let slots: Vec<u32> = (0..(ids.len() + free) as u32).collect();
            (
                Just(ids),
                Just(free),
                Just(slots).prop_shuffle(),
                Just(dimension),
                Just(lsn),
            )
        })
        .prop_map(|(ids, free, slots, dimension, checkpoint_lsn)| {
            let (live, free_slots) = slots.split_at(slots.len() - free);
            IndexSnapshot {
                version: INDEX_VERSION,
                dimension,
                checkpoint_lsn,
                slot_high_water: slots.len() as u32,
                entries: ids.into_iter().zip(live.iter().copied()).collect(),
                free_slots: free_slots.to_vec(),
                payload_generation: checkpoint_lsn % 7,
                uid: dimension ^ 0x5eed,
                payload_log_end: checkpoint_lsn.rotate_left(17),
            }
        })
}
