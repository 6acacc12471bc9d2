//! Reads of payloads through the payload log's read-only mapping: they see frames appended
//! after the log was mapped (also past the mapping's reserve, which remaps), they follow a
//! compaction to the new generation, they still check every frame (a damaged one is
//! `KEEL_CORRUPT`), and `get_record_into` agrees with `get_record`.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{code, create, flat, ids, payload, payload_log_path, put_with_payloads, read, vector};
use keeldb_core::{Collection, Durability, Id};

const DIM: u32 = 4;

/// `n`'s vector and payload read with `get_record_into`, as `get_record` gives them.
fn read_into(c: &Collection, n: u64) -> Option<(Vec<f32>, Option<Vec<u8>>)> {
    let mut v = vec![0f32; DIM as usize];
    let mut p = b"stale bytes from an earlier read".to_vec();
    let has_payload = c
        .get_record_into(&Id::Int(n), Some(&mut v), Some(&mut p))
        .unwrap_or_else(|e| panic!("get {n}: {e}"))?;
    Some((v, has_payload.then_some(p)))
}

fn assert_reads(c: &Collection, n: u64, want: Option<&[u8]>) {
    let record = c
        .get_record(&Id::Int(n), true, true)
        .expect("get_record")
        .expect("present");
    assert_eq!(record.payload.as_deref(), want, "get_record of {n}");
    assert_eq!(record.vector, Some(vector(n, DIM)), "vector of {n}");
    assert_eq!(
        read_into(c, n),
        Some((vector(n, DIM), want.map(<[u8]>::to_vec))),
        "get_record_into of {n}"
    );
}

#[test]
fn gets_see_payloads_appended_after_the_log_was_mapped() {
    // Each batch is read back at once, and every earlier one again; 1 MiB payloads carry
    // the log past the first mappings' reserves (16 MiB, then twice the log), so it is
    // remapped on the way.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, c) = create(dir.path(), DIM);
    let big = |n: u64| format!(r#"{{"n":{n},"pad":"{}"}}"#, "p".repeat(1 << 20)).into_bytes();
    for n in 0..80u64 {
        let p = big(n);
        c.upsert_with_payloads(
            &ids(&[n]),
            &flat(&[n], DIM),
            &[Some(&p[..])],
            Some(Durability::None),
        )
        .expect("upsert");
        assert_reads(&c, n, Some(&p));
        if n % 16 == 15 {
            for m in 0..=n {
                assert_reads(&c, m, Some(&big(m)));
            }
        }
    }
    assert!(c.stats().expect("stats").payload_log_bytes > 80 << 20);
    // Small frames after the big ones, and a record without a payload.
    put_with_payloads(&c, &[100, 101], 3);
    common::put(&c, &[102]);
    assert_reads(&c, 100, Some(&payload(100, 3)));
    assert_reads(&c, 101, Some(&payload(101, 3)));
    assert_reads(&c, 102, None);
    assert_eq!(read_into(&c, 103), None);
}

#[test]
fn gets_after_compaction_read_the_new_generation() {
    // The old generation was mapped and read; after the swap (and the old file's deletion)
    // every read comes from the new one, including frames appended after it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, c) = create(dir.path(), DIM);
    let ns: Vec<u64> = (0..200).collect();
    for v in 0..4 {
        put_with_payloads(&c, &ns, v);
        for &n in &ns {
            assert_reads(&c, n, Some(&payload(n, v)));
        }
    }
    c.compact().expect("compact");
    assert_eq!(c.stats().expect("stats").payload_log_generation, 2);
    assert!(!payload_log_path(dir.path(), 1).exists());
    for &n in &ns {
        assert_reads(&c, n, Some(&payload(n, 3)));
    }
    put_with_payloads(&c, &ns[..50], 9);
    for &n in &ns {
        assert_reads(&c, n, Some(&payload(n, if n < 50 { 9 } else { 3 })));
    }
}

#[test]
fn a_damaged_payload_frame_is_corrupt_on_get() {
    // A byte changed under an open collection (the mapping shows it) fails the frame's CRC:
    // both read paths report KEEL_CORRUPT instead of returning the changed payload.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1, 2, 3], 0);
    assert_reads(&c, 2, Some(&payload(2, 0)));
    // Commit groups leave their frames buffered; the checkpoint writes them to the file.
    c.checkpoint().expect("checkpoint");
    let path = payload_log_path(dir.path(), 1);
    let log = read(&path);
    let target = payload(2, 0);
    let at = log
        .windows(target.len())
        .position(|w| w == target.as_slice())
        .expect("payload 2 is in the log");
    // `"v":0` becomes `"v":1`: still valid JSON, only the CRC tells.
    let digit = at + target.windows(5).position(|w| w == b"\"v\":0").expect("v") + 4;
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open log");
    file.write_all_at(b"1", digit as u64).expect("damage");
    drop(file);
    assert_eq!(code(c.get_record(&Id::Int(2), true, true)), "KEEL_CORRUPT");
    let mut v = vec![0f32; DIM as usize];
    let mut p = Vec::new();
    assert_eq!(
        code(c.get_record_into(&Id::Int(2), Some(&mut v), Some(&mut p))),
        "KEEL_CORRUPT"
    );
    // Without the payload the record reads, and its neighbours are untouched.
    assert!(c
        .get_record_into(&Id::Int(2), Some(&mut v), None)
        .expect("vector only")
        .is_some());
    assert_reads(&c, 1, Some(&payload(1, 0)));
    assert_reads(&c, 3, Some(&payload(3, 0)));
}

#[test]
fn get_record_into_refuses_a_buffer_of_another_dimension() {
    // A buffer of the wrong length is an error with a code, not a panic or a short copy.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, c) = create(dir.path(), DIM);
    put_with_payloads(&c, &[1], 0);
    let mut short = vec![0f32; DIM as usize - 1];
    assert_eq!(
        code(c.get_record_into(&Id::Int(1), Some(&mut short), None)),
        "KEEL_DIMENSION_MISMATCH"
    );
}
