//! Distance kernels: dot products and squared L2 distances between queries and stored
//! vectors, for x86-64 AVX-512F, AVX2+FMA, and a portable fallback.
//!
//! The one entry point, [`score_block`], scores every query of a batch against every slot of
//! a block of slots. A lone query reads each vector front to back with four partial sums
//! (the pass is bound by memory bandwidth, so it only has to keep the loads sequential).
//! Several queries are scored a tile at a time: 4 queries x 4 vectors (AVX-512) or 4 x 2
//! (AVX2), so each loaded piece of a vector serves four queries from a register, and each
//! tile of vectors, read from memory once, is scored against every group of queries while
//! it sits in L1 (the queries themselves stay in L2). That reuse is what makes a batch of
//! queries cheaper than the same queries one by one: the batch is bound by arithmetic, not
//! by memory.
//!
//! Invariants:
//! - a kernel never reads outside the slices it is given: the SIMD code loads whole lanes
//!   only while `i + lanes <= len` and the tail with masked loads that touch no byte past the
//!   end (AVX-512 and AVX2 masked loads suppress faults on masked-off lanes);
//! - an instruction set is used only after the CPU reported it at run time
//!   ([`Isa::is_supported`]); asking for one it lacks falls back to [`Isa::Portable`];
//! - every kernel adds in float32 with several partial sums, so results differ from a
//!   float64 reference (and between instruction sets) by rounding only.

#[cfg(target_arch = "x86_64")]
mod x86;

/// An instruction set the kernels can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust that the compiler vectorises for the baseline target (SSE2 on x86-64).
    Portable,
    /// AVX2 with FMA: 8 floats per instruction.
    Avx2,
    /// AVX-512F: 16 floats per instruction.
    Avx512,
}

impl Isa {
    /// The widest instruction set this CPU supports (detected once, then cached by std).
    pub fn best() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Portable)
    }

    /// Every instruction set this CPU supports, widest first.
    pub fn supported() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// Whether the CPU running this process supports the instruction set.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// The name used in logs and benchmarks.
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// What a kernel computes for a query `q` and a vector `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `sum(q[i] * v[i])`.
    Dot,
    /// `sum((q[i] - v[i])^2)`.
    L2Squared,
}

/// Scores each query against each slot: `out[q * slots.len() + j]` becomes
/// `kernel(query q, vector in slot slots[j])`.
///
/// `queries` holds whole queries of `dim` floats; slot `s` is `data[s * dim..(s + 1) * dim]`.
///
/// # Panics
///
/// If `dim` is 0, `queries.len()` is not a multiple of `dim`, `out` has not exactly one
/// place per query and slot, or a slot lies outside `data`. Callers check these once, before
/// the scan; they are programming errors, never caused by input.
pub fn score_block(
    isa: Isa,
    kernel: Kernel,
    dim: usize,
    queries: &[f32],
    data: &[f32],
    slots: &[u32],
    out: &mut [f32],
) {
    assert!(
        dim > 0 && queries.len().is_multiple_of(dim),
        "queries must be whole vectors"
    );
    assert_eq!(
        out.len(),
        queries.len() / dim * slots.len(),
        "one score per query and slot"
    );
    assert!(
        slots.iter().all(|&s| (s as usize + 1) * dim <= data.len()),
        "every slot lies inside data"
    );
    let block = Block {
        dim,
        queries,
        data,
        slots,
    };
    let isa = if isa.is_supported() {
        isa
    } else {
        Isa::Portable
    };
    match (isa, kernel) {
        (Isa::Portable, Kernel::Dot) => block.score::<4, 2, 4>(
            out,
            portable_tile::<4, 2, false>,
            portable_tile::<1, 4, false>,
        ),
        (Isa::Portable, Kernel::L2Squared) => block.score::<4, 2, 4>(
            out,
            portable_tile::<4, 2, true>,
            portable_tile::<1, 4, true>,
        ),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Kernel::Dot) => block.score::<4, 2, 4>(
            out,
            x86::avx2_tile::<4, 2, false>,
            x86::avx2_single::<4, false>,
        ),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Kernel::L2Squared) => block.score::<4, 2, 4>(
            out,
            x86::avx2_tile::<4, 2, true>,
            x86::avx2_single::<4, true>,
        ),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Kernel::Dot) => block.score::<4, 4, 4>(
            out,
            x86::avx512_tile::<4, 4, false>,
            x86::avx512_single::<4, false>,
        ),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Kernel::L2Squared) => block.score::<4, 4, 4>(
            out,
            x86::avx512_tile::<4, 4, true>,
            x86::avx512_single::<4, true>,
        ),
        #[cfg(not(target_arch = "x86_64"))]
        (Isa::Avx2 | Isa::Avx512, _) => unreachable!("only x86-64 reports these as supported"),
    }
}

/// A tile kernel: scores `Q` queries against `V` vectors, all of the same length, into
/// `out[q][v]`. The x86 ones are wrappers that check the CPU before entering SIMD code.
type Tile<const Q: usize, const V: usize> = fn(&[&[f32]; Q], &[&[f32]; V], &mut [[f32; V]; Q]);

/// The arguments of one [`score_block`] call.
struct Block<'a> {
    dim: usize,
    queries: &'a [f32],
    data: &'a [f32],
    slots: &'a [u32],
}

impl Block<'_> {
    fn vector(&self, slot: u32) -> &[f32] {
        let start = slot as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    /// The `V` vectors of the tile starting at `j`; past the end of the block, the last
    /// vector is repeated (its scores are computed and dropped).
    fn vector_tile<const V: usize>(&self, j: usize) -> [&[f32]; V] {
        let last = self.slots.len() - 1;
        std::array::from_fn(|t| self.vector(self.slots[(j + t).min(last)]))
    }

    /// Scores every query against every slot: groups of `Q` queries with `multi`, the
    /// queries left over one at a time with `single`.
    fn score<const Q: usize, const V: usize, const VS: usize>(
        &self,
        out: &mut [f32],
        multi: Tile<Q, V>,
        single: Tile<1, VS>,
    ) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        let nq = self.queries.len() / self.dim;
        let grouped = nq - nq % Q;
        let mut tile = [[0f32; V]; Q];
        // Each tile of vectors is read from memory once and scored against every group of
        // queries while it sits in L1; the queries come from L2.
        for j in (0..n).step_by(V) {
            let vs = self.vector_tile::<V>(j);
            let width = V.min(n - j);
            for q0 in (0..grouped).step_by(Q) {
                let qs: [&[f32]; Q] = std::array::from_fn(|a| {
                    &self.queries[(q0 + a) * self.dim..(q0 + a + 1) * self.dim]
                });
                multi(&qs, &vs, &mut tile);
                for (a, row) in tile.iter().enumerate() {
                    let at = (q0 + a) * n + j;
                    out[at..at + width].copy_from_slice(&row[..width]);
                }
            }
        }
        for q in grouped..nq {
            let qs = [&self.queries[q * self.dim..(q + 1) * self.dim]];
            let mut tile = [[0f32; VS]; 1];
            for j in (0..n).step_by(VS) {
                single(&qs, &self.vector_tile::<VS>(j), &mut tile);
                let width = VS.min(n - j);
                let at = q * n + j;
                out[at..at + width].copy_from_slice(&tile[0][..width]);
            }
        }
    }
}

/// Lanes of the portable kernel's partial sums.
const PORTABLE_LANES: usize = 8;

/// The portable tile kernel: eight partial sums per pair, which the compiler turns into
/// SIMD for the baseline target.
fn portable_tile<const Q: usize, const V: usize, const L2: bool>(
    q: &[&[f32]; Q],
    v: &[&[f32]; V],
    out: &mut [[f32; V]; Q],
) {
    for (qa, row) in q.iter().zip(out.iter_mut()) {
        for (vb, cell) in v.iter().zip(row.iter_mut()) {
            *cell = portable_pair::<L2>(qa, vb);
        }
    }
}

fn portable_pair<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; PORTABLE_LANES];
    let mut ca = a.chunks_exact(PORTABLE_LANES);
    let mut cb = b.chunks_exact(PORTABLE_LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for lane in 0..PORTABLE_LANES {
            acc[lane] += term::<L2>(xa[lane], xb[lane]);
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| term::<L2>(x, y))
        .sum();
    acc.iter().sum::<f32>() + tail
}

fn term<const L2: bool>(x: f32, y: f32) -> f32 {
    if L2 {
        (x - y) * (x - y)
    } else {
        x * y
    }
}

/// `1 / |v|`, summed in float64; 0 for the zero vector, so that its cosine similarity with
/// anything is 0.
pub fn inverse_norm(v: &[f32]) -> f32 {
    let squares: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    inverse_sqrt(squares)
}

/// [`inverse_norm`] of a vector given as its little-endian bytes (as the log stores it).
pub fn inverse_norm_le(vector_le: &[u8]) -> f32 {
    let squares: f64 = vector_le
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .map(|x| x * x)
        .sum();
    inverse_sqrt(squares)
}

fn inverse_sqrt(squares: f64) -> f32 {
    if squares > 0.0 {
        (1.0 / squares.sqrt()) as f32
    } else {
        0.0
    }
}

/// The sum of every float in `data`, with sixteen partial sums: the cheapest possible pass
/// over the same bytes a search reads, which the benchmark uses as the memory-bandwidth
/// limit.
pub fn sum(data: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = data.chunks_exact(16);
    for chunk in &mut chunks {
        for lane in 0..16 {
            acc[lane] += chunk[lane];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::search::test_vector as vector;

    fn reference(kernel: Kernel, a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| {
                let (x, y) = (f64::from(x), f64::from(y));
                match kernel {
                    Kernel::Dot => x * y,
                    Kernel::L2Squared => (x - y) * (x - y),
                }
            })
            .sum()
    }

    /// Float32 sums of `dim` terms of size ~1 round by at most ~dim * 2^-24 of the terms'
    /// absolute sum.
    fn tolerance(kernel: Kernel, a: &[f32], b: &[f32]) -> f64 {
        let magnitude: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| match kernel {
                Kernel::Dot => (f64::from(x) * f64::from(y)).abs(),
                Kernel::L2Squared => (f64::from(x) - f64::from(y)).powi(2),
            })
            .sum();
        1e-6 * (a.len() as f64).sqrt() * magnitude.max(1.0)
    }

    #[test]
    fn every_isa_matches_a_float64_reference_at_odd_dimensions() {
        for isa in Isa::supported() {
            for kernel in [Kernel::Dot, Kernel::L2Squared] {
                for dim in [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 768, 1023] {
                    for nq in [1, 2, 3, 4, 5, 9] {
                        let queries: Vec<f32> =
                            (0..nq).flat_map(|q| vector(1000 + q as u64, dim)).collect();
                        let data: Vec<f32> = (0..11).flat_map(|s| vector(s, dim)).collect();
                        // Out of order, repeated, and not a multiple of any tile width.
                        let slots = [10u32, 0, 3, 3, 7, 1, 9];
                        let mut out = vec![f32::NAN; nq * slots.len()];
                        score_block(isa, kernel, dim, &queries, &data, &slots, &mut out);
                        for q in 0..nq {
                            let qv = &queries[q * dim..(q + 1) * dim];
                            for (j, &s) in slots.iter().enumerate() {
                                let v = &data[s as usize * dim..(s as usize + 1) * dim];
                                let want = reference(kernel, qv, v);
                                let got = f64::from(out[q * slots.len() + j]);
                                assert!(
                                    (got - want).abs() <= tolerance(kernel, qv, v),
                                    "{isa:?} {kernel:?} dim {dim} nq {nq} q {q} slot {s}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_query_scores_the_same_bits_alone_and_anywhere_in_a_batch() {
        for isa in Isa::supported() {
            for kernel in [Kernel::Dot, Kernel::L2Squared] {
                for dim in [5, 16, 45, 768] {
                    let data: Vec<f32> = (0..9).flat_map(|s| vector(s, dim)).collect();
                    let slots: Vec<u32> = (0..9).collect();
                    let batch: Vec<f32> = (0..6).flat_map(|q| vector(500 + q, dim)).collect();
                    let mut together = vec![0f32; 6 * 9];
                    score_block(isa, kernel, dim, &batch, &data, &slots, &mut together);
                    for (q, query) in batch.chunks_exact(dim).enumerate() {
                        let mut alone = vec![0f32; 9];
                        score_block(isa, kernel, dim, query, &data, &slots, &mut alone);
                        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&alone),
                            bits(&together[q * 9..(q + 1) * 9]),
                            "{isa:?} {kernel:?} dim {dim} query {q}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_empty_block_writes_nothing() {
        let mut out: Vec<f32> = Vec::new();
        score_block(
            Isa::best(),
            Kernel::Dot,
            3,
            &[1.0; 6],
            &[0.0; 3],
            &[],
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn masked_tails_read_nothing_past_the_slice() {
        // The last vector ends exactly at the end of `data`, at a dimension with a tail in
        // every lane width: a load past it would read the guard's values.
        for isa in Isa::supported() {
            let dim = 13;
            let mut backing = vec![1.0f32; 2 * dim + 16];
            backing[2 * dim..].fill(1e30);
            let data = &backing[..2 * dim];
            let mut out = [0f32; 2];
            score_block(isa, Kernel::Dot, dim, &[1.0; 13], data, &[0, 1], &mut out);
            assert_eq!(out, [13.0, 13.0], "{isa:?}");
        }
    }

    #[test]
    fn inverse_norms_are_exact_enough_and_zero_for_zero() {
        let v = [3.0f32, 4.0];
        assert!((inverse_norm(&v) - 0.2).abs() < 1e-7);
        let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(inverse_norm_le(&le), inverse_norm(&v));
        assert_eq!(inverse_norm(&[0.0, 0.0]), 0.0);
        // Squares that overflow float32 do not overflow the float64 sum.
        assert!(inverse_norm(&[3e38, 3e38]) > 0.0);
    }

    #[test]
    fn sum_adds_every_float() {
        let data: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        assert_eq!(sum(&data), 499_500.0);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn best_isa_is_supported() {
        assert!(Isa::best().is_supported());
        assert_eq!(Isa::supported().first(), Some(&Isa::best()));
    }
}
