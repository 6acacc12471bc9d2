//! The x86-64 tile kernels: AVX-512F (16 lanes) and AVX2+FMA (8 lanes).
//!
//! Each public function is a safe wrapper that checks the CPU (a cached atomic load in std)
//! before calling its `#[target_feature]` body, so it is sound to call from anywhere; on a
//! CPU without the feature it falls back to the portable kernel. The bodies load whole lanes
//! while `i + LANES <= len` and the tail with a masked load; every slice is read only below
//! the shortest length of all of them.

#![expect(
    unsafe_code,
    reason = "SIMD: raw-pointer loads and calls into #[target_feature] functions"
)]

use std::arch::x86_64::{
    __m256, __m256i, __m512, _mm256_add_ps, _mm256_castps256_ps128, _mm256_cmpgt_epi32,
    _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_set1_epi32,
    _mm256_setr_epi32, _mm256_setzero_ps, _mm256_sub_ps, _mm512_castps512_ps256, _mm512_fmadd_ps,
    _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_sub_ps,
    _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps,
};

use super::portable_tile;

/// Scores `Q` queries against `V` vectors with AVX-512F (portable fallback without it).
pub(super) fn avx512_tile<const Q: usize, const V: usize, const L2: bool>(
    q: &[&[f32]; Q],
    v: &[&[f32]; V],
    out: &mut [[f32; V]; Q],
) {
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA, checked just above.
        unsafe { avx512_body::<Q, V, L2>(q, v, out) }
    } else {
        portable_tile::<Q, V, L2>(q, v, out);
    }
}

/// Scores `Q` queries against `V` vectors with AVX2 and FMA (portable fallback without them).
pub(super) fn avx2_tile<const Q: usize, const V: usize, const L2: bool>(
    q: &[&[f32]; Q],
    v: &[&[f32]; V],
    out: &mut [[f32; V]; Q],
) {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { avx2_body::<Q, V, L2>(q, v, out) }
    } else {
        portable_tile::<Q, V, L2>(q, v, out);
    }
}

/// Scores one query against `V` vectors, one vector after the other, for a CPU with
/// AVX-512F, in the AVX-512 kernels' summation order but with 256-bit AVX2 instructions
/// (portable fallback without AVX2 and FMA). On the Zen 4 this was measured on, a lone
/// query's pass over memory ran about 20% faster with 256-bit loads than with 512-bit
/// ones, while batches, bound by arithmetic, run faster with AVX-512; summing in the same
/// order keeps a query's distances bit-identical alone or in a batch.
pub(super) fn avx512_single<const V: usize, const L2: bool>(
    q: &[&[f32]; 1],
    v: &[&[f32]; V],
    out: &mut [[f32; V]; 1],
) {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        for (vb, cell) in v.iter().zip(out[0].iter_mut()) {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            *cell = unsafe { avx2_pair_in_avx512_order::<L2>(q[0], vb) };
        }
    } else {
        portable_tile::<1, V, L2>(q, v, out);
    }
}

/// Scores one query against `V` vectors, one after the other, with AVX2 and FMA (portable
/// fallback without them).
pub(super) fn avx2_single<const V: usize, const L2: bool>(
    q: &[&[f32]; 1],
    v: &[&[f32]; V],
    out: &mut [[f32; V]; 1],
) {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        for (vb, cell) in v.iter().zip(out[0].iter_mut()) {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            *cell = unsafe { avx2_pair::<L2>(q[0], vb) };
        }
    } else {
        portable_tile::<1, V, L2>(q, v, out);
    }
}

// The single-query kernels sum exactly as the tile kernels of their instruction set do
// (per pair: one partial sum per lane, over the same lanes in the same order, then the same
// reduction), so a query gets bit-identical distances alone or in a batch, wherever it
// falls in the batch. One dependency chain per vector is enough: out-of-order execution
// overlaps the chains of consecutive vectors, and the pass is bound by memory anyway.

/// The AVX-512 kernels' sum with AVX2: lanes 0-7 of each 16-float chunk go to `lo`,
/// lanes 8-15 to `hi`, exactly as the two halves of one 512-bit partial sum; the tail is
/// masked the same way; the final reduction is [`reduce512`]'s.
#[target_feature(enable = "avx2,fma")]
fn avx2_pair_in_avx512_order<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    const HALF: usize = 8;
    let len = a.len().min(b.len());
    let mut lo = _mm256_setzero_ps();
    let mut hi = _mm256_setzero_ps();
    let mut i = 0;
    while i + LANES <= len {
        // SAFETY: i + 16 <= len <= both lengths: the 2 x 8 floats read lie inside.
        let (a0, b0, a1, b1) = unsafe {
            (
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                _mm256_loadu_ps(a.as_ptr().add(i + HALF)),
                _mm256_loadu_ps(b.as_ptr().add(i + HALF)),
            )
        };
        lo = step256::<L2>(a0, b0, lo);
        hi = step256::<L2>(a1, b1, hi);
        i += LANES;
    }
    if i < len {
        // As the 16-lane masked tail: both halves take a step, lanes past `len` read zero.
        let left = len - i;
        let lo_mask = tail_mask256(left.min(HALF));
        // SAFETY: i < len, so the pointers are in bounds; the mask enables only lanes
        // below len, and vmaskmovps does not touch masked-off lanes (no fault).
        let (a0, b0) = unsafe {
            (
                _mm256_maskload_ps(a.as_ptr().add(i), lo_mask),
                _mm256_maskload_ps(b.as_ptr().add(i), lo_mask),
            )
        };
        lo = step256::<L2>(a0, b0, lo);
        let (a1, b1) = if left > HALF {
            let hi_mask = tail_mask256(left - HALF);
            // SAFETY: i + 8 < len, so the pointers are in bounds; as above for the mask.
            unsafe {
                (
                    _mm256_maskload_ps(a.as_ptr().add(i + HALF), hi_mask),
                    _mm256_maskload_ps(b.as_ptr().add(i + HALF), hi_mask),
                )
            }
        } else {
            (_mm256_setzero_ps(), _mm256_setzero_ps())
        };
        hi = step256::<L2>(a1, b1, hi);
    }
    reduce256(_mm256_add_ps(lo, hi))
}

#[target_feature(enable = "avx2,fma")]
fn avx2_pair<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut out = [[0f32; 1]; 1];
    avx2_body::<1, 1, L2>(&[a], &[b], &mut out);
    out[0][0]
}

/// A mask enabling the first `left` (0 to 8) of eight lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn tail_mask256(left: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(left as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// The sum of the sixteen lanes: the two 256-bit halves added, then [`reduce256`]. Written
/// out (rather than `_mm512_reduce_add_ps`, whose order is unspecified) so the AVX2 twin
/// above can reproduce it bit for bit.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn reduce512(x: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(x);
    let hi = _mm512_castps512_ps256(_mm512_shuffle_f32x4::<0b11_10_11_10>(x, x));
    reduce256(_mm256_add_ps(lo, hi))
}

/// The length every slice has at least.
fn common_len(q: &[&[f32]], v: &[&[f32]]) -> usize {
    q.iter().chain(v).map(|s| s.len()).min().unwrap_or(0)
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512_body<const Q: usize, const V: usize, const L2: bool>(
    q: &[&[f32]; Q],
    v: &[&[f32]; V],
    out: &mut [[f32; V]; Q],
) {
    const LANES: usize = 16;
    let len = common_len(q, v);
    let mut acc = [[_mm512_setzero_ps(); V]; Q];
    let mut vv = [_mm512_setzero_ps(); V];
    let mut i = 0;
    while i + LANES <= len {
        for b in 0..V {
            // SAFETY: i + 16 <= len <= v[b].len(): the 16 floats read lie inside v[b].
            vv[b] = unsafe { _mm512_loadu_ps(v[b].as_ptr().add(i)) };
        }
        for a in 0..Q {
            // SAFETY: as above, for q[a].
            let qa = unsafe { _mm512_loadu_ps(q[a].as_ptr().add(i)) };
            for b in 0..V {
                acc[a][b] = step512::<L2>(qa, vv[b], acc[a][b]);
            }
        }
        i += LANES;
    }
    if i < len {
        // 1 to 15 floats are left: load them with the other lanes masked to zero.
        let mask = (1u16 << (len - i)) - 1;
        for b in 0..V {
            // SAFETY: i < len <= v[b].len(), so the pointer is in bounds; the mask enables
            // only lanes i..len, and AVX-512 masked loads do not touch masked-off lanes.
            vv[b] = unsafe { _mm512_maskz_loadu_ps(mask, v[b].as_ptr().add(i)) };
        }
        for a in 0..Q {
            // SAFETY: as above, for q[a].
            let qa = unsafe { _mm512_maskz_loadu_ps(mask, q[a].as_ptr().add(i)) };
            for b in 0..V {
                acc[a][b] = step512::<L2>(qa, vv[b], acc[a][b]);
            }
        }
    }
    for a in 0..Q {
        for b in 0..V {
            out[a][b] = reduce512(acc[a][b]);
        }
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
fn step512<const L2: bool>(q: __m512, v: __m512, acc: __m512) -> __m512 {
    if L2 {
        let d = _mm512_sub_ps(q, v);
        _mm512_fmadd_ps(d, d, acc)
    } else {
        _mm512_fmadd_ps(q, v, acc)
    }
}

#[target_feature(enable = "avx2,fma")]
fn avx2_body<const Q: usize, const V: usize, const L2: bool>(
    q: &[&[f32]; Q],
    v: &[&[f32]; V],
    out: &mut [[f32; V]; Q],
) {
    const LANES: usize = 8;
    let len = common_len(q, v);
    let mut acc = [[_mm256_setzero_ps(); V]; Q];
    let mut vv = [_mm256_setzero_ps(); V];
    let mut i = 0;
    while i + LANES <= len {
        for b in 0..V {
            // SAFETY: i + 8 <= len <= v[b].len(): the 8 floats read lie inside v[b].
            vv[b] = unsafe { _mm256_loadu_ps(v[b].as_ptr().add(i)) };
        }
        for a in 0..Q {
            // SAFETY: as above, for q[a].
            let qa = unsafe { _mm256_loadu_ps(q[a].as_ptr().add(i)) };
            for b in 0..V {
                acc[a][b] = step256::<L2>(qa, vv[b], acc[a][b]);
            }
        }
        i += LANES;
    }
    if i < len {
        // 1 to 7 floats are left: load them with the other lanes read as zero.
        let mask = tail_mask256(len - i);
        for b in 0..V {
            // SAFETY: i < len <= v[b].len(), so the pointer is in bounds; the mask enables
            // only lanes i..len, and vmaskmovps does not touch masked-off lanes (no fault).
            vv[b] = unsafe { _mm256_maskload_ps(v[b].as_ptr().add(i), mask) };
        }
        for a in 0..Q {
            // SAFETY: as above, for q[a].
            let qa = unsafe { _mm256_maskload_ps(q[a].as_ptr().add(i), mask) };
            for b in 0..V {
                acc[a][b] = step256::<L2>(qa, vv[b], acc[a][b]);
            }
        }
    }
    for a in 0..Q {
        for b in 0..V {
            out[a][b] = reduce256(acc[a][b]);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn step256<const L2: bool>(q: __m256, v: __m256, acc: __m256) -> __m256 {
    if L2 {
        let d = _mm256_sub_ps(q, v);
        _mm256_fmadd_ps(d, d, acc)
    } else {
        _mm256_fmadd_ps(q, v, acc)
    }
}

/// The sum of the eight lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn reduce256(x: __m256) -> f32 {
    let halves = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
    let one = _mm_add_ss(pairs, _mm_shuffle_ps::<0b01>(pairs, pairs));
    _mm_cvtss_f32(one)
}
