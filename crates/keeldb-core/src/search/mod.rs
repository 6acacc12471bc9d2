//! Exact k-nearest-neighbour search over the mapped vectors.
//!
//! [`exact_search`] scans slots `0..slot_count` in blocks of about [`BLOCK_BYTES`]. For each
//! block it gathers the candidates (live slots the filter accepts), scores every query of
//! the batch against them with [`kernels::score_block`], turns the scores into distances and
//! offers them to one bounded heap per query ([`topk::TopK`]). The scan reads the vectors in
//! place: nothing is copied out of the mapping except the hits' vectors, on request.
//!
//! Distances (smaller is nearer):
//! - cosine: `1 - q.v / (|q| |v|)`, in [0, 2] up to rounding; a zero vector (query or stored)
//!   has similarity 0, so distance 1, to everything. `1/|v|` is kept per slot by the caller
//!   (computed once per stored vector), so the scan itself is a dot product;
//! - dot: `-(q.v)`;
//! - euclidean: `|q - v|` (the heap orders squared distances; the root is taken per hit).
//!
//! Ties (equal distances) come back in key order, which the collection makes the id order:
//! string ids before integer ids, strings by UTF-8 bytes, integers by value. Products
//! are summed in float32, so a distance may differ from a float64 computation by rounding.
//!
//! Everything here is a pure function of slices; the collection supplies the mapped
//! vectors, the slot -> id mapping and the filter, under its read lock.

pub mod filter;
pub mod kernels;
pub mod topk;

use crate::error::{Error, Result};
use crate::types::Metric;
use kernels::{Isa, Kernel};
use topk::{Neighbour, TopK};

/// Largest `k` a search may ask for.
pub const SEARCH_K_MAX: usize = 10_000;
/// Most queries in one batch.
pub const SEARCH_QUERIES_MAX: usize = 10_000;
/// Most hits one call may ask for (queries x k), checked before anything is reserved.
pub const SEARCH_HITS_MAX: usize = 1_000_000;
/// Most floats of hit vectors one call may return (queries x k x dimension, when vectors
/// are asked for): 1 GiB.
pub const SEARCH_VECTOR_FLOATS_MAX: usize = 1 << 28;
/// Bytes of vectors gathered and scored per block: small next to the L2 cache, large enough
/// that per-block work (gathering, heap updates) is amortised.
pub const BLOCK_BYTES: usize = 256 << 10;
/// A batch of at least this many queries is scored by two threads, each over half the
/// slots: a batch is compute-bound (each vector block serves every query from L1), so a
/// second core helps it, while a lone query is memory-bound and stays on one thread.
pub const PARALLEL_QUERIES_MIN: usize = 4;
/// ...and only over at least this many slots, so that starting a thread is a small cost.
pub const PARALLEL_SLOTS_MIN: usize = 16_384;

/// Whether [`exact_search`]'s caller should split this search across two threads (see
/// [`PARALLEL_QUERIES_MIN`]) with [`exact_search_range`] and [`merge_halves`].
pub fn worth_splitting(query_count: usize, slot_count: usize) -> bool {
    query_count >= PARALLEL_QUERIES_MIN && slot_count >= PARALLEL_SLOTS_MIN
}

/// Merges the per-query results of two searches over disjoint slot ranges into the `k`
/// best of each, in the same order one search over both ranges gives.
pub fn merge_halves<K: Ord>(
    first: Vec<Vec<Neighbour<K>>>,
    second: Vec<Vec<Neighbour<K>>>,
    k: usize,
) -> Vec<Vec<Neighbour<K>>> {
    first
        .into_iter()
        .zip(second)
        .map(|(mut a, b)| {
            a.extend(b);
            a.sort_unstable();
            a.truncate(k);
            a
        })
        .collect()
}

/// The vectors a search scans.
#[derive(Debug, Clone, Copy)]
pub struct Space<'a> {
    /// Slot `s` is `data[s * dim..(s + 1) * dim]`.
    pub data: &'a [f32],
    /// Floats per vector.
    pub dim: usize,
    /// Slots `0..slot_count` are scanned.
    pub slot_count: usize,
    /// How distances are measured.
    pub metric: Metric,
    /// For cosine, `1/|v|` of each slot's vector (0 for a zero vector); unused otherwise.
    pub inverse_norms: &'a [f32],
}

/// Checks `k`, the number of queries and the result size; returns the number of queries.
///
/// `queries` must hold whole vectors of `dim` finite floats: a wrong length is
/// `DimensionMismatch`, a NaN or infinity `InvalidArgument` naming the query and component.
pub fn validate_request(
    queries: &[f32],
    dim: usize,
    k: usize,
    include_vectors: bool,
) -> Result<usize> {
    if k == 0 || k > SEARCH_K_MAX {
        return Err(Error::invalid(format!(
            "k must be an integer from 1 to {SEARCH_K_MAX}, got {k}"
        )));
    }
    if dim == 0 || !queries.len().is_multiple_of(dim) {
        return Err(Error::DimensionMismatch(format!(
            "queries hold {} floats, which is not a whole number of vectors of the collection's dimension {dim}",
            queries.len()
        )));
    }
    let count = queries.len() / dim;
    if count > SEARCH_QUERIES_MAX {
        return Err(Error::invalid(format!(
            "a batch holds at most {SEARCH_QUERIES_MAX} queries, got {count}"
        )));
    }
    let hits = count * k;
    if hits > SEARCH_HITS_MAX {
        return Err(Error::invalid(format!(
            "{count} queries x k {k} = {hits} hits, more than the {SEARCH_HITS_MAX} one call may return; split the batch"
        )));
    }
    if include_vectors && hits.saturating_mul(dim) > SEARCH_VECTOR_FLOATS_MAX {
        return Err(Error::invalid(format!(
            "{hits} hits with their vectors of {dim} floats exceed the {SEARCH_VECTOR_FLOATS_MAX}-float limit of one call; split the batch or leave out the vectors"
        )));
    }
    for (q, query) in queries.chunks_exact(dim).enumerate() {
        if let Some(j) = query.iter().position(|x| !x.is_finite()) {
            let which = if count == 1 {
                "the query".to_owned()
            } else {
                format!("query {q}")
            };
            return Err(Error::invalid(format!(
                "{which}: component {j} is {}, queries must be finite",
                query[j]
            )));
        }
    }
    Ok(count)
}

/// The `k` nearest candidates of each query, best first (see the module docs for distances
/// and ties). `key_of(slot)` is `None` for a free slot; `accept(slot)` is the filter, called
/// at most once per live slot whatever the number of queries.
///
/// `queries` must have passed [`validate_request`].
///
/// # Panics
///
/// If `space` is inconsistent (slots beyond `data`, or missing inverse norms for cosine):
/// the caller builds it from its own state, so that would be a bug, not bad input.
pub fn exact_search<K: Ord + Copy>(
    space: &Space<'_>,
    queries: &[f32],
    k: usize,
    isa: Isa,
    key_of: impl Fn(usize) -> Option<K>,
    accept: impl FnMut(usize) -> bool,
) -> Vec<Vec<Neighbour<K>>> {
    exact_search_range(space, 0..space.slot_count, queries, k, isa, key_of, accept)
}

/// [`exact_search`] over the slots in `range` only (which must lie below
/// `space.slot_count`): the piece two threads each run over half the slots.
pub fn exact_search_range<K: Ord + Copy>(
    space: &Space<'_>,
    range: std::ops::Range<usize>,
    queries: &[f32],
    k: usize,
    isa: Isa,
    key_of: impl Fn(usize) -> Option<K>,
    mut accept: impl FnMut(usize) -> bool,
) -> Vec<Vec<Neighbour<K>>> {
    let dim = space.dim;
    assert!(range.end <= space.slot_count, "the range lies in the space");
    assert!(
        dim > 0 && queries.len().is_multiple_of(dim),
        "whole queries"
    );
    assert!(
        space.slot_count * dim <= space.data.len(),
        "slots lie in data"
    );
    let cosine = space.metric == Metric::Cosine;
    assert!(
        !cosine || space.inverse_norms.len() >= space.slot_count,
        "an inverse norm per slot"
    );
    let nq = queries.len() / dim;
    let kernel = match space.metric {
        Metric::Euclidean => Kernel::L2Squared,
        Metric::Cosine | Metric::Dot => Kernel::Dot,
    };
    let query_inverse_norms: Vec<f32> = if cosine {
        queries
            .chunks_exact(dim)
            .map(kernels::inverse_norm)
            .collect()
    } else {
        Vec::new()
    };
    let mut heaps: Vec<TopK<K>> = (0..nq).map(|_| TopK::new(k, space.slot_count)).collect();
    let per_block = (BLOCK_BYTES / (dim * 4)).max(1);
    let mut slots: Vec<u32> = Vec::with_capacity(per_block);
    let mut keys: Vec<K> = Vec::with_capacity(per_block);
    let mut scores = vec![0f32; nq * per_block];
    for start in range.clone().step_by(per_block) {
        slots.clear();
        keys.clear();
        for slot in start..(start + per_block).min(range.end) {
            if let Some(key) = key_of(slot) {
                if accept(slot) {
                    // Slots are below slot_count, which the collection keeps in u32.
                    slots.push(slot as u32);
                    keys.push(key);
                }
            }
        }
        if slots.is_empty() {
            continue;
        }
        let n = slots.len();
        let out = &mut scores[..nq * n];
        kernels::score_block(isa, kernel, dim, queries, space.data, &slots, out);
        for (q, (heap, row)) in heaps.iter_mut().zip(out.chunks_exact(n)).enumerate() {
            match space.metric {
                Metric::Euclidean => {
                    for ((&score, &slot), &key) in row.iter().zip(&slots).zip(&keys) {
                        heap.push(score, key, slot);
                    }
                }
                Metric::Dot => {
                    for ((&score, &slot), &key) in row.iter().zip(&slots).zip(&keys) {
                        heap.push(-score, key, slot);
                    }
                }
                Metric::Cosine => {
                    let iq = query_inverse_norms[q];
                    for ((&score, &slot), &key) in row.iter().zip(&slots).zip(&keys) {
                        let similarity = score * iq * space.inverse_norms[slot as usize];
                        heap.push(1.0 - similarity, key, slot);
                    }
                }
            }
        }
    }
    heaps
        .into_iter()
        .map(|heap| {
            let mut hits = heap.into_sorted();
            if space.metric == Metric::Euclidean {
                for hit in &mut hits {
                    hit.distance = hit.distance.sqrt();
                }
                // Two squared distances may round to one root: keep such ties in key order.
                hits.sort_unstable();
            }
            hits
        })
        .collect()
}

/// A deterministic vector with components in [-1, 1), for the search module's unit tests.
#[cfg(test)]
pub(crate) fn test_vector(seed: u64, dim: usize) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::search::test_vector as vector;

    #[test]
    fn two_halves_merged_equal_one_whole_search() {
        // The two-thread split gives exactly what one scan over every slot gives, ties and
        // free slots included, for every metric.
        let (dim, slots, nq, k) = (5, 301, 6, 7);
        let mut data: Vec<f32> = (0..slots as u64)
            .flat_map(|i| vector(i % 97, dim))
            .collect();
        data.extend(vector(1, dim)); // a spare slot past slot_count
        let queries: Vec<f32> = (0..nq as u64).flat_map(|i| vector(1000 + i, dim)).collect();
        let norms: Vec<f32> = data.chunks_exact(dim).map(kernels::inverse_norm).collect();
        let key_of = |slot: usize| (slot % 11 != 3).then_some(slot as u64);
        for metric in [Metric::Euclidean, Metric::Dot, Metric::Cosine] {
            let space = Space {
                data: &data,
                dim,
                slot_count: slots,
                metric,
                inverse_norms: &norms,
            };
            let accept = |slot: usize| !slot.is_multiple_of(5);
            let whole = exact_search(&space, &queries, k, Isa::Portable, key_of, accept);
            for middle in [0, 1, 150, 300, slots] {
                let a = exact_search_range(
                    &space,
                    0..middle,
                    &queries,
                    k,
                    Isa::Portable,
                    key_of,
                    accept,
                );
                let b = exact_search_range(
                    &space,
                    middle..slots,
                    &queries,
                    k,
                    Isa::Portable,
                    key_of,
                    accept,
                );
                assert_eq!(merge_halves(a, b, k), whole, "{metric:?} split at {middle}");
            }
        }
    }

    /// The float64 distance the module docs define.
    fn reference(metric: Metric, q: &[f32], v: &[f32]) -> f64 {
        let dot: f64 = q
            .iter()
            .zip(v)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        let norm = |x: &[f32]| x.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
        match metric {
            Metric::Dot => -dot,
            Metric::Cosine => {
                let n = norm(q) * norm(v);
                if n == 0.0 {
                    1.0
                } else {
                    1.0 - dot / n
                }
            }
            Metric::Euclidean => q
                .iter()
                .zip(v)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum::<f64>()
                .sqrt(),
        }
    }

    struct Fixture {
        dim: usize,
        data: Vec<f32>,
        live: Vec<bool>,
        norms: Vec<f32>,
    }

    impl Fixture {
        fn new(dim: usize, slots: usize) -> Fixture {
            let data: Vec<f32> = (0..slots as u64).flat_map(|s| vector(s, dim)).collect();
            // Every seventh slot is free; slot 3 holds a zero vector.
            let live: Vec<bool> = (0..slots).map(|s| s % 7 != 5).collect();
            let mut fixture = Fixture {
                dim,
                data,
                live,
                norms: Vec::new(),
            };
            if slots > 3 {
                fixture.data[3 * dim..4 * dim].fill(0.0);
            }
            fixture.norms = fixture
                .data
                .chunks_exact(dim)
                .map(kernels::inverse_norm)
                .collect();
            fixture
        }

        fn space(&self, metric: Metric) -> Space<'_> {
            Space {
                data: &self.data,
                dim: self.dim,
                slot_count: self.live.len(),
                metric,
                inverse_norms: &self.norms,
            }
        }
    }

    /// Checks each query's hits against the float64 ranking of the accepted live slots:
    /// the same set (a slot whose reference distance ties the k-th within rounding may
    /// stand in for another), best first, distances equal up to rounding.
    fn assert_exact(
        fixture: &Fixture,
        metric: Metric,
        queries: &[f32],
        k: usize,
        got: &[Vec<Neighbour<u32>>],
        accept: &dyn Fn(usize) -> bool,
    ) {
        let dim = fixture.dim;
        for (q, query) in queries.chunks_exact(dim).enumerate() {
            let mut want: Vec<(f64, u32)> = (0..fixture.live.len())
                .filter(|&s| fixture.live[s] && accept(s))
                .map(|s| {
                    let v = &fixture.data[s * dim..(s + 1) * dim];
                    (reference(metric, query, v), s as u32)
                })
                .collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let hits = &got[q];
            assert_eq!(hits.len(), k.min(want.len()), "query {q}: hit count");
            let eps = 1e-4;
            let kth = want.get(hits.len().wrapping_sub(1)).map_or(0.0, |w| w.0);
            for (rank, hit) in hits.iter().enumerate() {
                let v = &fixture.data[hit.slot as usize * dim..(hit.slot as usize + 1) * dim];
                let exact = reference(metric, query, v);
                assert!(
                    (f64::from(hit.distance) - exact).abs() <= eps * exact.abs().max(1.0),
                    "query {q} rank {rank}: distance {} vs {exact}",
                    hit.distance
                );
                assert_eq!(hit.key, hit.slot, "the key is the slot's");
                let in_top = want[..hits.len()].iter().any(|w| w.1 == hit.slot);
                assert!(
                    in_top || (exact - kth).abs() <= eps * kth.abs().max(1.0),
                    "query {q}: slot {} (distance {exact}) is not among the {} nearest",
                    hit.slot,
                    hits.len()
                );
                if rank > 0 {
                    assert!(hits[rank - 1] <= *hit, "query {q}: best first");
                }
            }
        }
    }

    #[test]
    fn matches_a_float64_reference_for_every_metric_isa_and_batch_size() {
        for isa in Isa::supported() {
            for metric in [Metric::Cosine, Metric::Dot, Metric::Euclidean] {
                for (dim, slots) in [(1, 40), (3, 100), (17, 300), (768, 400)] {
                    let fixture = Fixture::new(dim, slots);
                    for nq in [1, 4, 6] {
                        let mut queries: Vec<f32> =
                            (0..nq as u64).flat_map(|q| vector(9000 + q, dim)).collect();
                        // One query is a stored vector: its own slot must come first.
                        queries[..dim].copy_from_slice(&fixture.data[dim..2 * dim]);
                        for k in [1, 10, 1000] {
                            let got = exact_search(
                                &fixture.space(metric),
                                &queries,
                                k,
                                isa,
                                |s| fixture.live[s].then_some(s as u32),
                                |_| true,
                            );
                            assert_eq!(got.len(), nq);
                            assert_exact(&fixture, metric, &queries, k, &got, &|_| true);
                            if metric != Metric::Dot && dim > 1 {
                                assert_eq!(got[0][0].slot, 1, "{metric:?} dim {dim}: self first");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_filter_is_asked_once_per_live_slot_and_restricts_the_hits() {
        let fixture = Fixture::new(16, 500);
        let queries: Vec<f32> = (0..5).flat_map(|q| vector(77 + q, 16)).collect();
        let mut asked = vec![0u32; 500];
        let accept = |s: usize| s.is_multiple_of(3);
        let got = exact_search(
            &fixture.space(Metric::Euclidean),
            &queries,
            20,
            Isa::best(),
            |s| fixture.live[s].then_some(s as u32),
            |s| {
                asked[s] += 1;
                accept(s)
            },
        );
        for (s, &n) in asked.iter().enumerate() {
            assert_eq!(n, u32::from(fixture.live[s]), "slot {s}");
        }
        assert_exact(&fixture, Metric::Euclidean, &queries, 20, &got, &accept);
        assert!(got.iter().flatten().all(|h| accept(h.slot as usize)));
    }

    #[test]
    fn nothing_to_scan_gives_empty_results() {
        let fixture = Fixture::new(4, 0);
        let got = exact_search(
            &fixture.space(Metric::Cosine),
            &[1.0; 8],
            5,
            Isa::best(),
            |_| Some(0u32),
            |_| true,
        );
        assert_eq!(got, vec![Vec::new(), Vec::new()]);
        let fixture = Fixture::new(4, 30);
        let got = exact_search(
            &fixture.space(Metric::Dot),
            &[1.0; 4],
            5,
            Isa::best(),
            |s| Some(s as u32),
            |_| false,
        );
        assert_eq!(got, vec![Vec::new()]);
    }

    #[test]
    fn ties_come_back_in_key_order() {
        // Six copies of one vector under keys in scrambled slot order.
        let dim = 8;
        let data: Vec<f32> = (0..6).flat_map(|_| vector(5, dim)).collect();
        let keys = [40u32, 7, 99, 3, 12, 8];
        let space = Space {
            data: &data,
            dim,
            slot_count: 6,
            metric: Metric::Euclidean,
            inverse_norms: &[],
        };
        let got = exact_search(
            &space,
            &vector(6, dim),
            4,
            Isa::best(),
            |s| Some(keys[s]),
            |_| true,
        );
        let order: Vec<u32> = got[0].iter().map(|h| h.key).collect();
        assert_eq!(order, [3, 7, 8, 12]);
    }

    #[test]
    fn requests_are_validated() {
        let code = |r: Result<usize>| r.err().map(|e| e.code());
        assert_eq!(validate_request(&[1.0; 6], 3, 10, false).ok(), Some(2));
        assert_eq!(validate_request(&[], 3, 10, false).ok(), Some(0));
        assert_eq!(
            code(validate_request(&[1.0; 4], 3, 10, false)),
            Some("KEEL_DIMENSION_MISMATCH")
        );
        assert_eq!(
            code(validate_request(&[1.0; 3], 3, 0, false)),
            Some("KEEL_INVALID_ARGUMENT")
        );
        assert_eq!(
            code(validate_request(&[1.0; 3], 3, SEARCH_K_MAX + 1, false)),
            Some("KEEL_INVALID_ARGUMENT")
        );
        let nan = validate_request(&[1.0, f32::NAN, 0.0], 3, 1, false);
        assert!(nan
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("component 1 is NaN")));
        let inf = validate_request(&[1.0, 2.0, 0.0, 0.0, f32::INFINITY, 0.0], 3, 1, false);
        assert!(inf
            .err()
            .is_some_and(|e| e.to_string().contains("query 1: component 1 is inf")));
        let many = vec![0.0; (SEARCH_QUERIES_MAX + 1) * 2];
        assert_eq!(
            code(validate_request(&many, 2, 1, false)),
            Some("KEEL_INVALID_ARGUMENT")
        );
        let hits = vec![0.0; 200 * 2];
        assert_eq!(
            code(validate_request(&hits, 2, SEARCH_K_MAX, false)),
            Some("KEEL_INVALID_ARGUMENT")
        );
        let wide = vec![0.0; 65_536 * 10];
        assert_eq!(
            code(validate_request(&wide, 65_536, 1000, true)),
            Some("KEEL_INVALID_ARGUMENT")
        );
        assert_eq!(validate_request(&wide, 65_536, 1000, false).ok(), Some(10));
    }
}
