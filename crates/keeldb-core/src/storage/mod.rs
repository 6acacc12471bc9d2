//! Files on disk: the file-system door ([`vfs`]), atomic replacement, directory sync, the
//! directory lock, the memory-mapped vector file and the payload log files.
//!
//! Invariant: only `storage` and `wal` open files, and only through a [`vfs::Vfs`]. Every failure is returned as
//! `Error::Io` naming the operation and the path; nothing here retries a failed write or
//! sync (the caller poisons its handle instead).

pub mod fsio;
pub mod lock;
pub mod payload_log;
#[cfg(feature = "sim")]
pub mod sim;
pub mod vectors;
pub mod vfs;

/// Makes room in `buf` for `more` bytes, doubling as usual but to no more than `cap` and
/// what the pending bytes need: a buffer written out once it reaches `cap` never holds more
/// than that and one more item, where plain doubling would take it to twice `cap`.
pub(crate) fn reserve_capped(buf: &mut Vec<u8>, more: usize, cap: usize) {
    let need = buf.len() + more;
    if need > buf.capacity() {
        let target = need.max((buf.capacity() * 2).min(cap + more));
        buf.reserve_exact(target - buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::reserve_capped;

    #[test]
    fn a_capped_buffer_holds_at_most_its_cap_and_one_more_item() {
        let cap = 1000;
        let mut buf = Vec::new();
        let mut most = 0;
        for round in 0..50 {
            // Items of varying size, written out once the buffer reaches `cap`.
            let item = vec![round as u8; 37 + round * 3];
            reserve_capped(&mut buf, item.len(), cap);
            buf.extend_from_slice(&item);
            most = most.max(buf.capacity());
            if buf.len() >= cap {
                buf.clear();
            }
        }
        // Doubling alone would have reached 2048.
        assert!(most <= cap + 37 + 49 * 3, "capacity reached {most}");
    }

    #[test]
    fn an_item_larger_than_the_cap_still_fits() {
        let mut buf = vec![1u8; 10];
        reserve_capped(&mut buf, 5000, 100);
        assert!(buf.capacity() >= 5010);
    }
}
