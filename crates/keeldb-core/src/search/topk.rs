//! The k best candidates of a scan: a bounded max-heap whose top is the worst kept.
//!
//! Order ("best first"): smaller distance first; equal distances by key, smaller first
//! (the collection uses the record id, so ties come back in id order whatever the storage
//! order). Distances are compared with `f32::total_cmp` after two normalisations: -0 counts
//! as +0, and NaN (possible only when a product overflows float32) as a positive NaN, which
//! sorts after +infinity, so a NaN distance is never preferred to a number.
//!
//! Invariant: the heap never holds more than `k` entries, and a candidate is admitted only
//! if it is better than the worst kept one; so after any sequence of pushes it holds the k
//! best candidates seen, whatever their order of arrival.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One candidate: its distance, its key (for ties and for the caller), and its slot.
#[derive(Debug, Clone, Copy)]
pub struct Neighbour<K> {
    /// The distance, normalised as described in the module docs.
    pub distance: f32,
    /// The caller's key (the record id in a collection).
    pub key: K,
    /// Where the vector lives.
    pub slot: u32,
}

impl<K: Ord> PartialEq for Neighbour<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Ord> Eq for Neighbour<K> {}

impl<K: Ord> PartialOrd for Neighbour<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord> Ord for Neighbour<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then_with(|| self.key.cmp(&other.key))
    }
}

/// Maps -0 to +0 and every NaN to the positive quiet NaN, so that `total_cmp` orders
/// distances as documented.
pub fn normalise(distance: f32) -> f32 {
    if distance.is_nan() {
        f32::NAN
    } else {
        distance + 0.0
    }
}

/// The `k` best candidates pushed so far.
#[derive(Debug)]
pub struct TopK<K> {
    k: usize,
    heap: BinaryHeap<Neighbour<K>>,
}

impl<K: Ord + Copy> TopK<K> {
    /// An empty selection of at most `k` candidates; `expected` (the number of candidates
    /// the caller will push, if known) bounds the memory reserved up front.
    pub fn new(k: usize, expected: usize) -> TopK<K> {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(expected)),
        }
    }

    /// Offers a candidate; it is kept if it is among the `k` best so far.
    #[inline]
    pub fn push(&mut self, distance: f32, key: K, slot: u32) {
        let candidate = Neighbour {
            distance: normalise(distance),
            key,
            slot,
        };
        if self.heap.len() < self.k {
            self.heap.push(candidate);
            return;
        }
        if let Some(mut worst) = self.heap.peek_mut() {
            if candidate < *worst {
                *worst = candidate;
            }
        }
    }

    /// The kept candidates, best first.
    pub fn into_sorted(self) -> Vec<Neighbour<K>> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_smallest_in_any_arrival_order() {
        let distances = [5.0f32, 1.0, 4.0, 1.0, 3.0, 9.0, 0.5, 2.0];
        for rotation in 0..distances.len() {
            let mut top = TopK::new(3, distances.len());
            for i in 0..distances.len() {
                let j = (i + rotation) % distances.len();
                top.push(distances[j], j as u32, j as u32);
            }
            let got: Vec<(f32, u32)> = top
                .into_sorted()
                .iter()
                .map(|n| (n.distance, n.key))
                .collect();
            // The two 1.0s tie: key 1 before key 3.
            assert_eq!(got, [(0.5, 6), (1.0, 1), (1.0, 3)], "rotation {rotation}");
        }
    }

    #[test]
    fn ties_at_the_boundary_keep_the_smaller_key() {
        let mut top = TopK::new(1, 3);
        top.push(1.0, 7u32, 0);
        top.push(1.0, 2u32, 1);
        top.push(1.0, 9u32, 2);
        assert_eq!(top.into_sorted()[0].key, 2);
    }

    #[test]
    fn k_larger_than_the_candidates_returns_them_all() {
        let mut top = TopK::new(10, 2);
        top.push(2.0, 'b', 0);
        top.push(1.0, 'a', 1);
        let keys: Vec<char> = top.into_sorted().iter().map(|n| n.key).collect();
        assert_eq!(keys, ['a', 'b']);
    }

    #[test]
    fn nan_sorts_last_and_negative_zero_ties_with_zero() {
        let mut top = TopK::new(4, 4);
        top.push(f32::NAN, 0u8, 0);
        top.push(f32::INFINITY, 1u8, 1);
        top.push(0.0, 3u8, 3);
        top.push(-0.0, 2u8, 2);
        let got = top.into_sorted();
        let keys: Vec<u8> = got.iter().map(|n| n.key).collect();
        assert_eq!(keys, [2, 3, 1, 0]);
        assert!(got[0].distance.is_sign_positive());
        assert!(got[3].distance.is_nan());
        // A NaN never displaces a number.
        let mut top = TopK::new(1, 2);
        top.push(1e30, 5u8, 0);
        top.push(-f32::NAN, 0u8, 1);
        assert_eq!(top.into_sorted()[0].key, 5);
    }
}
