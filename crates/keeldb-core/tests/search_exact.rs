//! Search returns exactly the k nearest live records of a float64 reference, for every
//! metric, after deletes and updates, after a crash and after a clean reopen, and never
//! shows a torn vector to a search running during writes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{open_ok, NAME};
use keeldb_core::search::filter::Filter;
use keeldb_core::{Collection, Durability, Id, Metric, SearchHit, SearchRequest};

/// A deterministic vector with components in [-1, 1).
fn vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn distance(metric: Metric, q: &[f32], v: &[f32]) -> f64 {
    let dot: f64 = q
        .iter()
        .zip(v)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum();
    let norm = |x: &[f32]| x.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
    match metric {
        Metric::Dot => -dot,
        Metric::Cosine if norm(q) * norm(v) == 0.0 => 1.0,
        Metric::Cosine => 1.0 - dot / (norm(q) * norm(v)),
        Metric::Euclidean => q
            .iter()
            .zip(v)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            .sqrt(),
    }
}

/// Asserts `hits` are the k nearest of `model` to `query` (a record tying the k-th within
/// rounding may stand in for another), best first, with their exact vectors.
fn assert_nearest(
    metric: Metric,
    model: &BTreeMap<Id, Vec<f32>>,
    query: &[f32],
    k: usize,
    hits: &[SearchHit],
) {
    let mut want: Vec<(f64, &Id)> = model
        .iter()
        .map(|(id, v)| (distance(metric, query, v), id))
        .collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    assert_eq!(hits.len(), k.min(want.len()), "hit count");
    let eps = 1e-4;
    let kth = want.get(hits.len().wrapping_sub(1)).map_or(0.0, |w| w.0);
    for (rank, hit) in hits.iter().enumerate() {
        let stored = model.get(&hit.id).expect("a hit is a live record");
        assert_eq!(
            hit.vector.as_deref(),
            Some(&stored[..]),
            "{}: exact vector",
            hit.id
        );
        let exact = distance(metric, query, stored);
        assert!(
            (f64::from(hit.distance) - exact).abs() <= eps * exact.abs().max(1.0),
            "rank {rank} {}: distance {} vs {exact}",
            hit.id,
            hit.distance
        );
        let in_top = want[..hits.len()].iter().any(|w| w.1 == &hit.id);
        assert!(
            in_top || (exact - kth).abs() <= eps * kth.abs().max(1.0),
            "{} at {exact} is not among the {} nearest (k-th at {kth})",
            hit.id,
            hits.len()
        );
        if rank > 0 {
            assert!(hits[rank - 1].distance <= hit.distance, "best first");
        }
    }
}

const DIM: usize = 37;

fn request(k: usize) -> SearchRequest<'static> {
    SearchRequest {
        k,
        filter: None,
        include_vectors: true,
        include_payloads: false,
    }
}

/// Upserts records 0..n (ids alternate integers and strings), deletes every fifth, and
/// updates every seventh; returns what the collection should hold.
fn load(c: &Collection, n: u64) -> BTreeMap<Id, Vec<f32>> {
    let mut model = BTreeMap::new();
    let ids: Vec<Id> = (0..n)
        .map(|i| match i % 2 {
            0 => Id::Int(i),
            _ => Id::from(format!("s{i}").as_str()),
        })
        .collect();
    let flat: Vec<f32> = (0..n).flat_map(|i| vector(i, DIM)).collect();
    for chunk in 0..ids.len().div_ceil(100) {
        let range = chunk * 100..((chunk + 1) * 100).min(ids.len());
        c.upsert(
            &ids[range.clone()],
            &flat[range.start * DIM..range.end * DIM],
            Some(Durability::None),
        )
        .expect("upsert");
    }
    for (i, id) in ids.iter().enumerate() {
        model.insert(id.clone(), flat[i * DIM..(i + 1) * DIM].to_vec());
    }
    let deleted: Vec<Id> = ids.iter().step_by(5).cloned().collect();
    assert_eq!(
        c.delete(&deleted, None).expect("delete"),
        deleted.len() as u64
    );
    for id in &deleted {
        model.remove(id);
    }
    for (i, id) in ids.iter().enumerate().skip(3).step_by(7) {
        let v = vector(10_000 + i as u64, DIM);
        c.upsert(std::slice::from_ref(id), &v, None)
            .expect("update");
        model.insert(id.clone(), v);
    }
    // A zero vector (cosine similarity 0 to everything) and a duplicate (a tie).
    c.upsert(&[Id::from("zero")], &[0.0; DIM], None)
        .expect("zero");
    model.insert(Id::from("zero"), vec![0.0; DIM]);
    let dup = model.values().next().expect("records").clone();
    c.upsert(&[Id::from("dup")], &dup, None).expect("dup");
    model.insert(Id::from("dup"), dup);
    model
}

fn check_all(c: &Collection, metric: Metric, model: &BTreeMap<Id, Vec<f32>>) {
    let queries: Vec<f32> = (0..9).flat_map(|q| vector(50_000 + q, DIM)).collect();
    for k in [1, 10, 2000] {
        let batch = c.search_batch(&queries, &request(k)).expect("batch");
        assert_eq!(batch.len(), 9);
        for (q, hits) in batch.iter().enumerate() {
            let query = &queries[q * DIM..(q + 1) * DIM];
            assert_nearest(metric, model, query, k, hits);
            // A single search gives what the batch gave.
            assert_eq!(&c.search(query, &request(k)).expect("search"), hits);
        }
    }
    // A stored vector finds itself first (dot excepted: a longer vector may beat it).
    let (id, v) = model.iter().nth(3).expect("records");
    let hits = c.search(v, &request(1)).expect("self");
    if metric != Metric::Dot {
        assert_eq!(&hits[0].id, id);
    }
}

#[test]
fn search_matches_a_float64_reference_through_updates_crashes_and_reopens() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::Euclidean] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_ok(dir.path());
        let c = db
            .create_collection(NAME, DIM as u32, metric)
            .expect("create");
        assert!(c
            .search(&vector(1, DIM), &request(5))
            .expect("empty")
            .is_empty());
        let model = load(&c, 1500);
        check_all(&c, metric, &model);
        // A crash: the log is replayed at open.
        drop(c);
        drop(db);
        let db = open_ok(dir.path());
        let c = db.collection(NAME).expect("reopened");
        check_all(&c, metric, &model);
        // Writes after the first (cosine) search keep the inverse norms current.
        let mut model = model;
        let fresh = vector(77_777, DIM);
        c.upsert(&[Id::Int(1)], &fresh, None)
            .expect("update after search");
        model.insert(Id::Int(1), fresh.clone());
        assert_eq!(
            c.search(&fresh, &request(1)).expect("search")[0].id,
            Id::Int(1)
        );
        check_all(&c, metric, &model);
        // A clean reopen: everything comes from the checkpoint.
        db.close().expect("close");
        let db = open_ok(dir.path());
        let c = db.collection(NAME).expect("reopened");
        assert_eq!(c.stats().expect("stats").records_replayed, 0);
        check_all(&c, metric, &model);
        db.close().expect("close");
    }
}

#[test]
fn bad_requests_get_their_codes_and_closed_collections_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_ok(dir.path());
    let c = db
        .create_collection(NAME, 4, Metric::Cosine)
        .expect("create");
    c.upsert(&[Id::Int(1)], &[1.0, 0.0, 0.0, 0.0], None)
        .expect("upsert");
    let code = |r: keeldb_core::Result<Vec<SearchHit>>| r.err().map(|e| e.code());
    assert_eq!(
        code(c.search(&[1.0; 3], &request(1))),
        Some("KEEL_DIMENSION_MISMATCH")
    );
    assert_eq!(
        code(c.search(&[1.0; 5], &request(1))),
        Some("KEEL_DIMENSION_MISMATCH")
    );
    assert_eq!(
        code(c.search(&[1.0, f32::NAN, 0.0, 0.0], &request(1))),
        Some("KEEL_INVALID_ARGUMENT")
    );
    assert_eq!(
        code(c.search(&[1.0, 0.0, f32::NEG_INFINITY, 0.0], &request(1))),
        Some("KEEL_INVALID_ARGUMENT")
    );
    assert_eq!(
        code(c.search(&[1.0; 4], &request(0))),
        Some("KEEL_INVALID_ARGUMENT")
    );
    assert_eq!(
        c.search_batch(&[1.0; 7], &request(1))
            .err()
            .map(|e| e.code()),
        Some("KEEL_DIMENSION_MISMATCH")
    );
    assert_eq!(
        c.search_batch(&[], &request(1)).expect("no queries").len(),
        0
    );
    db.close().expect("close");
    assert_eq!(code(c.search(&[1.0; 4], &request(1))), Some("KEEL_CLOSED"));
    assert_eq!(
        c.search_batch(&[], &request(1)).err().map(|e| e.code()),
        Some("KEEL_CLOSED")
    );
    assert_eq!(
        c.memory_scan_for_bench().err().map(|e| e.code()),
        Some("KEEL_CLOSED")
    );
}

#[test]
fn filters_apply_to_records_without_payloads_as_empty_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_ok(dir.path());
    let c = db
        .create_collection(NAME, 8, Metric::Euclidean)
        .expect("create");
    let ids: Vec<Id> = (0..50).map(Id::Int).collect();
    let flat: Vec<f32> = (0..50).flat_map(|i| vector(i, 8)).collect();
    c.upsert(&ids, &flat, None).expect("upsert");
    let q = vector(99, 8);
    let unfiltered = c.search(&q, &request(10)).expect("search");
    let with = |json: serde_json::Value| {
        let filter = Filter::parse(&json).expect("valid filter");
        let req = SearchRequest {
            filter: Some(&filter),
            ..request(10)
        };
        c.search(&q, &req).expect("filtered search")
    };
    assert_eq!(
        with(serde_json::json!({ "a": { "$exists": false } })),
        unfiltered
    );
    assert_eq!(with(serde_json::json!({})), unfiltered);
    assert_eq!(with(serde_json::json!({ "a": { "$ne": 1 } })), unfiltered);
    assert!(with(serde_json::json!({ "a": 1 })).is_empty());
    assert!(with(serde_json::json!({ "$or": [{ "a": 1 }, { "b": { "$gt": 0 } }] })).is_empty());
    db.close().expect("close");
}

#[test]
fn a_search_during_writes_never_sees_a_torn_vector() {
    // Every vector written is constant (all components equal). A torn read would mix two.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_ok(dir.path());
    let dim = 256;
    let c = db
        .create_collection(NAME, dim as u32, Metric::Euclidean)
        .expect("create");
    let ids: Vec<Id> = (0..64).map(Id::Int).collect();
    let flat: Vec<f32> = (0..64).flat_map(|i| vec![i as f32; dim]).collect();
    c.upsert(&ids, &flat, Some(Durability::None)).expect("load");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let c = Arc::clone(&c);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = (round % 1000) as f32 + 0.5;
                let id = Id::Int(round % 64);
                c.upsert(&[id], &vec![value; dim], Some(Durability::None))
                    .expect("write");
                if round.is_multiple_of(10) {
                    c.delete(&[Id::Int((round / 10) % 64)], Some(Durability::None))
                        .expect("delete");
                }
                round += 1;
            }
        })
    };
    let started = std::time::Instant::now();
    let mut searches = 0;
    while started.elapsed() < std::time::Duration::from_millis(500) {
        let q = vec![(searches % 1000) as f32; dim];
        for hit in c.search(&q, &request(64)).expect("search") {
            let v = hit.vector.expect("asked for vectors");
            assert!(v.iter().all(|&x| x == v[0]), "torn vector under {}", hit.id);
            let want = (q[0] - v[0]).abs() * (dim as f32).sqrt();
            assert!(
                (hit.distance - want).abs() <= 1e-3 * want.max(1.0),
                "distance of {}",
                hit.id
            );
        }
        searches += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(searches > 10, "only {searches} searches ran");
    db.close().expect("close");
}

#[test]
fn a_large_batch_split_across_two_threads_equals_its_queries_one_by_one() {
    // Past PARALLEL_SLOTS_MIN slots a batch of PARALLEL_QUERIES_MIN or more queries is
    // scored by two threads over half the slots each; each query's result must be exactly
    // what it gets alone (one thread), for every metric, with a filter and without.
    use keeldb_core::search::{PARALLEL_QUERIES_MIN, PARALLEL_SLOTS_MIN};
    for metric in [Metric::Cosine, Metric::Dot, Metric::Euclidean] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_ok(dir.path());
        let c = db.create_collection(NAME, 4, metric).expect("create");
        let n = PARALLEL_SLOTS_MIN as u64 + 500;
        let ids: Vec<Id> = (0..n).map(Id::Int).collect();
        // Few distinct vectors, so many distances tie across the two halves.
        let flat: Vec<f32> = (0..n).flat_map(|i| vector(i % 1009, 4)).collect();
        c.upsert(&ids, &flat, Some(Durability::None))
            .expect("upsert");
        let nq = PARALLEL_QUERIES_MIN + 3;
        let queries: Vec<f32> = (0..nq as u64).flat_map(|q| vector(50_000 + q, 4)).collect();
        let filter =
            Filter::parse(&serde_json::json!({ "missing": { "$exists": false } })).expect("filter");
        for f in [None, Some(&filter)] {
            let req = SearchRequest {
                filter: f,
                ..request(25)
            };
            let batch = c.search_batch(&queries, &req).expect("batch");
            for (q, hits) in batch.iter().enumerate() {
                let alone = c.search(&queries[q * 4..(q + 1) * 4], &req).expect("alone");
                assert_eq!(
                    hits,
                    &alone,
                    "{metric:?}, query {q}, filter {}",
                    f.is_some()
                );
            }
        }
        db.close().expect("close");
    }
}
