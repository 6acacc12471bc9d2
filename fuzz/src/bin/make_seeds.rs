//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`: small valid
//! files of each format (and a few near misses), so that the fuzzer starts from inputs that
//! get past the magic and the checksums. Run by `scripts/fuzz.sh seeds`; the output is
//! committed.

use std::fs;
use std::path::Path;

use keeldb_core::format::config::{self, CollectionConfig};
use keeldb_core::format::index::{self, IndexSnapshot, INDEX_VERSION};
use keeldb_core::format::payload_index::{self, PayloadLoc, PayloadSnapshot};
use keeldb_core::format::payload_log::{self, FrameKind, PAYLOAD_LOG_HEADER_LEN};
use keeldb_core::format::vectors;
use keeldb_core::format::wal::{encode_header, BatchEncoder};
use keeldb_core::{Id, Metric};
use keeldb_fuzz::checks::{fixture_files, FIXTURE_FILES};

fn record(lsn: u64, dimension: usize, ops: &[(bool, Id)]) -> Vec<u8> {
    let mut enc = BatchEncoder::new(64);
    for (upsert, id) in ops {
        if *upsert {
            let v: Vec<f32> = (0..dimension).map(|j| lsn as f32 + j as f32).collect();
            enc.upsert(id, &v);
        } else {
            enc.delete(id);
        }
    }
    enc.finish(lsn)
}

fn write_all(dir: &Path, target: &str, seeds: Vec<(&str, Vec<u8>)>) {
    let out = dir.join(target);
    fs::create_dir_all(&out).expect("create corpus directory");
    for (name, bytes) in seeds {
        fs::write(out.join(name), bytes).expect("write seed");
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus".to_owned());
    let dir = Path::new(&dir);

    // wal_replay: control byte (dimension 2, salvage, checkpoint 0), then records.
    // Control 0x01 = dimension 2, salvage; 0x05 the same under strict; 0x41 with CRC fix-up.
    let dim = 2usize;
    let r1 = record(1, dim, &[(true, Id::Int(1)), (true, Id::from("a"))]);
    let r2 = record(2, dim, &[(false, Id::Int(1))]);
    let r3 = record(3, dim, &[(true, Id::Int(7))]);
    let mut three = [r1.clone(), r2.clone(), r3.clone()].concat();
    let mut torn = three.clone();
    torn.truncate(torn.len() - 5);
    let mut flipped = three.clone();
    flipped[r1.len() + 26] ^= 0x10;
    let mut whole_file = vec![0x81u8];
    whole_file.extend_from_slice(&encode_header(2, 0));
    whole_file.extend_from_slice(&r1);
    three.insert(0, 0x01);
    torn.insert(0, 0x01);
    flipped.insert(0, 0x01);
    let mut strict_flipped = flipped.clone();
    strict_flipped[0] = 0x05;
    let mut forged = three.clone();
    forged[0] = 0x41;
    write_all(
        dir,
        "wal_replay",
        vec![
            ("three-records", three),
            ("torn-tail", torn),
            ("mid-log-flip", flipped),
            ("mid-log-flip-strict", strict_flipped),
            ("whole-file", whole_file),
            ("crc-fixup", forged),
        ],
    );

    // index_file: an empty index and one with entries and free slots.
    let empty = IndexSnapshot {
        version: INDEX_VERSION,
        dimension: 4,
        ..IndexSnapshot::default()
    };
    let full = IndexSnapshot {
        version: INDEX_VERSION,
        dimension: 4,
        checkpoint_lsn: 9,
        slot_high_water: 4,
        entries: vec![(Id::from("x"), 2), (Id::Int(5), 0), (Id::Int(6), 3)],
        free_slots: vec![1],
        payload_generation: 1,
        payload_log_end: 32,
        uid: 0,
    };
    write_all(
        dir,
        "index_file",
        vec![
            ("empty", [&[0u8][..], &index::encode(&empty)].concat()),
            ("entries", [&[0u8][..], &index::encode(&full)].concat()),
            (
                "entries-crc-fixup",
                [&[1u8][..], &index::encode(&full)].concat(),
            ),
        ],
    );

    // vector_header: a header page, and its first 32 bytes.
    let header = vectors::encode_header(384, 0);
    write_all(
        dir,
        "vector_header",
        vec![
            ("page", [&[0u8][..], &header].concat()),
            ("short-crc-fixup", [&[1u8][..], &header[..32]].concat()),
        ],
    );

    // collection_config: every metric.
    let configs = [Metric::Cosine, Metric::Dot, Metric::Euclidean].map(|metric| {
        config::encode(&CollectionConfig {
            format_version: 1,
            dimension: 3,
            metric,
            uid: 0,
        })
    });
    let [cosine, dot, euclidean] = configs;
    write_all(
        dir,
        "collection_config",
        vec![("cosine", cosine), ("dot", dot), ("euclidean", euclidean)],
    );

    // open_dir: no edit (the fixture as is), then one edit of each kind on each file.
    let files = fixture_files();
    // Byte 0 of each: which checksums to recompute after the edits (see `edited_files`).
    let mut seeds = vec![("unchanged".to_owned(), vec![0u8])];
    for (file, name) in FIXTURE_FILES.iter().enumerate() {
        let len = u16::try_from(files[file].len()).unwrap_or(u16::MAX);
        // The four files of a collection without payloads, then (bit 4) the payload files.
        let file = match file {
            0..=3 => file as u8,
            _ => 0x10 | (file as u8 - 4),
        };
        seeds.push((
            format!("{name}-flip"),
            vec![0, file | 1 << 2, 13, 0, 1, 0x5a],
        ));
        seeds.push((
            format!("{name}-flip-crc-fixup"),
            vec![31, file | 1 << 2, 45, 0, 1, 0x5a],
        ));
        seeds.push((
            format!("{name}-cut"),
            [&[0, file | 2 << 2][..], &(len / 2).to_le_bytes(), &[0]].concat(),
        ));
        seeds.push((
            format!("{name}-append"),
            vec![0, file | 3 << 2, 0, 0, 4, 0, 0, 0, 0],
        ));
    }
    let seeds = seeds.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    write_all(dir, "open_dir", seeds);

    // payload_log: control byte (checkpoint lsn 3, salvage), then frames after a valid
    // header: two stores, a delete, a store after the checkpoint (cut by recovery); the
    // same under strict, torn, with a flipped byte (strict and salvage), with an unknown kind
    // and the CRCs recomputed (0x10), and as a whole file of generation 4 (0x20).
    let mut frames = Vec::new();
    let mut ends = Vec::new();
    for (kind, lsn, id, payload) in [
        (FrameKind::Store, 1, Id::Int(1), &br#"{"a":1}"#[..]),
        (
            FrameKind::Store,
            2,
            Id::from("doc"),
            &br#"[true,null,"x"]"#[..],
        ),
        (FrameKind::Delete, 3, Id::Int(1), &b""[..]),
        (FrameKind::Store, 5, Id::Int(2), &b"2"[..]),
    ] {
        payload_log::encode_frame(&mut frames, kind, lsn, &id, payload);
        ends.push(frames.len());
    }
    let control = 0x03u8;
    let strict = control | 0x08;
    let mut torn = frames.clone();
    torn.truncate(ends[1] - 5);
    let mut flipped = frames.clone();
    flipped[ends[0] + 30] ^= 0x10;
    let mut unknown_kind = frames.clone();
    unknown_kind[ends[0] + 4] = 3;
    let whole_file = [&payload_log::encode_header(4, 0)[..], &frames].concat();
    let with = |control: u8, bytes: &[u8]| [&[control][..], bytes].concat();
    write_all(
        dir,
        "payload_log",
        vec![
            ("four-frames", with(control, &frames)),
            ("four-frames-strict", with(strict, &frames)),
            ("torn-tail", with(control, &torn)),
            ("mid-log-flip", with(control, &flipped)),
            ("mid-log-flip-strict", with(strict, &flipped)),
            (
                "unknown-kind-crc-fixup",
                with(control | 0x10, &unknown_kind),
            ),
            ("whole-file", with(control | 0x20, &whole_file)),
        ],
    );

    // payload_index: an empty snapshot, one whose entries point at the frames above, and the
    // latter with its CRC recomputed (byte 0 = 1).
    let empty = PayloadSnapshot {
        version: payload_index::PAYLOAD_INDEX_VERSION,
        generation: 1,
        checkpoint_lsn: 0,
        log_end: PAYLOAD_LOG_HEADER_LEN as u64,
        entries: Vec::new(),
        uid: 0,
    };
    let header_len = PAYLOAD_LOG_HEADER_LEN as u64;
    let loc = |from: usize, to: usize| PayloadLoc {
        offset: header_len + from as u64,
        frame_len: (to - from) as u32,
    };
    let full = PayloadSnapshot {
        version: payload_index::PAYLOAD_INDEX_VERSION,
        generation: 1,
        checkpoint_lsn: 3,
        log_end: header_len + ends[2] as u64,
        entries: vec![(Id::from("doc"), loc(ends[0], ends[1]))],
        uid: 0,
    };
    let two = PayloadSnapshot {
        checkpoint_lsn: 5,
        log_end: header_len + ends[3] as u64,
        entries: vec![
            (Id::from("doc"), loc(ends[0], ends[1])),
            (Id::Int(2), loc(ends[2], ends[3])),
        ],
        ..full.clone()
    };
    write_all(
        dir,
        "payload_index",
        vec![
            ("empty", with(0, &payload_index::encode(&empty))),
            ("one-entry", with(0, &payload_index::encode(&full))),
            ("two-entries", with(0, &payload_index::encode(&two))),
            (
                "two-entries-crc-fixup",
                with(1, &payload_index::encode(&two)),
            ),
        ],
    );
}
