//! Replays a log image: finds where its valid records end, hands each record after the last
//! checkpoint to the caller, and classifies every damaged byte range.
//!
//! Damage is *mid-log* only if a valid record after it carries `RECORD_FLAG_AFTER_SYNC`:
//! then the damaged bytes had been fdatasynced before that record was written, so a crash
//! cannot explain them. Otherwise they belong to writes that were never synced, whose
//! sectors a power loss may keep in any order (a later record whole, an earlier one torn):
//! that is a torn tail, cut there, records after it included. None of those records was
//! acknowledged under `fsync` (its group's sync would have flagged the next record).
//!
//! The rules, in the order they are checked at each position, except that the stale case
//! of rule 6 and rule 7 come before rule 5 (a record that ends the log ends it whatever its
//! kind):
//! 1. Bytes that are not a record header (bad sync marker or header CRC, or too short):
//!    if a valid record follows somewhere later and a flagged one at or after it that
//!    continues the log (lsn above every one before the damage and above the checkpoint's),
//!    the range up to it is mid-log damage (`Salvage`: skip and count it; `Strict`:
//!    refuse); otherwise it is a torn tail.
//! 2. A header that checks out but declares more than `WAL_RECORD_BYTES_MAX`: keeldb never
//!    writes that, so the file is refused under every policy (no allocation is attempted).
//! 3. A body that runs past the end of the file: a torn tail.
//! 4. A body whose CRC fails: mid-log damage if a valid record follows and a flagged one
//!    at or after it, else a torn tail.
//! 5. A record kind this build does not know: refused (`UnsupportedVersion`), because
//!    appending after bytes that were not understood could destroy a newer writer's data.
//! 6. A sequence number not above the previous record's, or above `LSN_MAX`: refused as
//!    corruption, unless it is also at or below the checkpoint's: then the record is a
//!    stale one from before the log was last emptied (newer records were written over the
//!    start of the old ones after an emptying that did not reach the disk), and the log
//!    ends there like at a torn tail.
//! 7. A record after old ones (at or below the checkpoint) that skips ahead of
//!    `checkpoint_lsn + 1` ends the log like a torn tail; a first record that does means
//!    the records between were emptied with the log by a later checkpoint than ids.idx's
//!    (an older ids.idx put back): refused under `Strict`; under `Salvage` the missing
//!    records are counted and reported and the log is replayed (docs/FORMAT.md, Replay,
//!    rule 7).
//! 8. A record at or below the checkpoint's sequence number is already in the vector file:
//!    skipped. Any other record is decoded whole (refused as corruption if it does not
//!    decode: its CRC held, so keeldb wrote it wrong or someone forged it) and applied.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::trailing_zeros;
use crate::format::wal::{
    decode_batch_into, decode_record_header, frame_body_crc_ok, HeaderProblem, Op, RecordHeader,
    RECORD_FLAG_AFTER_SYNC, RECORD_HEADER_LEN, RECORD_KIND_MAX, RECORD_SYNC, WAL_HEADER_LEN,
};
use crate::types::{RecoveryPolicy, LSN_MAX};

/// What replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Where the valid records end: the log is cut here before anything is appended.
    pub end_offset: u64,
    /// Bytes after `end_offset` (a torn tail), to be truncated, not counting the zeros the
    /// file ends with: those are space the writer had zero-filled ahead of its records
    /// (see `wal::writer::PREALLOC_MIN_BYTES`), truncated too but not damage.
    pub torn_bytes: u64,
    /// Damaged records or byte ranges skipped under `Salvage`.
    pub corrupt_records_skipped: u64,
    /// Records applied (those after the checkpoint).
    pub records_replayed: u64,
    /// Highest sequence number seen in the log, or 0.
    pub last_lsn: u64,
    /// One line per skipped range, naming its offset.
    pub warnings: Vec<String>,
}

/// Records [`ops_estimate`] reads: a walk over every header of a large log cost replay more
/// than sizing its maps saved (a cache and TLB miss per record).
const OPS_SAMPLE_RECORDS: usize = 64;

/// How close [`ops_estimate`] locates the end of the records after the checkpoint.
const LIVE_END_PRECISION: usize = 64 << 10;

/// Most bytes one probe of [`ops_estimate`] searches for a record header.
const PROBE_SCAN_MAX: usize = 1 << 20;

/// About how many ops the records after `checkpoint_lsn` in `image` hold, for sizing what
/// replay fills. The first [`OPS_SAMPLE_RECORDS`] of them give ops per byte (from their CRC
/// checked headers and unchecked op counts; the exact sum if the log ends within them), scaled
/// to where the records after the checkpoint end, with a quarter to spare. That end is found
/// by bisection, each probe reading the first record header after a point: a log emptied by a
/// checkpoint keeps its length, so the older records written over are still there after the
/// newer ones (their lsns at or below the checkpoint), and then the zeros the writer filled
/// ahead of its records. Never trusted further: the caller bounds it by the files' sizes.
pub fn ops_estimate(image: &[u8], checkpoint_lsn: u64) -> u64 {
    let mut pos = WAL_HEADER_LEN;
    let mut last_lsn = 0;
    let (mut ops, mut first, mut sampled_records) = (0u64, None, 0);
    // Older records before the newer ones are not keeldb's layout, but cost a bounded walk.
    for _ in 0..4 * OPS_SAMPLE_RECORDS {
        if sampled_records == OPS_SAMPLE_RECORDS {
            break;
        }
        let Some(Ok(header)) = image.get(pos..).map(decode_record_header) else {
            return ops;
        };
        let body = pos + RECORD_HEADER_LEN;
        let (Some(count), true) = (image.get(body..body + 4), header.lsn > last_lsn) else {
            return ops;
        };
        if header.lsn > checkpoint_lsn {
            let count: [u8; 4] = count.try_into().expect("four bytes");
            ops = ops.saturating_add(u64::from(u32::from_le_bytes(count)));
            first.get_or_insert(pos);
            sampled_records += 1;
        }
        last_lsn = header.lsn;
        pos = body + header.body_len as usize + 4;
    }
    // The records after the checkpoint follow one another from `first` on.
    let Some(first) = first.filter(|_| pos <= image.len()) else {
        return ops;
    };
    let end = live_end(image, pos, checkpoint_lsn);
    let sampled = (pos - first).max(1) as u64;
    (ops.saturating_mul((end - first) as u64) / sampled).saturating_mul(5) / 4
}

/// About where the records after `checkpoint_lsn` end in `image`, at or after `from` (the
/// end of one of them): see [`ops_estimate`].
fn live_end(image: &[u8], from: usize, checkpoint_lsn: u64) -> usize {
    let sync = RECORD_SYNC.to_le_bytes();
    let (mut lo, mut hi) = (from, image.len() - trailing_zeros(&image[from..]));
    while hi.saturating_sub(lo) > LIVE_END_PRECISION {
        let mid = lo + (hi - lo) / 2;
        let window = &image[mid..hi.min(mid.saturating_add(PROBE_SCAN_MAX))];
        // The first few markers only: a forged log full of them costs a bounded search.
        let header = memchr::memmem::find_iter(window, &sync)
            .take(16)
            .find_map(|at| decode_record_header(&window[at..]).ok().map(|h| (at, h)));
        match header {
            // No header this far: most likely inside a large record; go on past it.
            None => lo = mid + window.len(),
            Some((at, h)) if h.lsn > checkpoint_lsn => {
                lo = (mid + at).saturating_add(h.frame_len() as usize).min(hi);
            }
            Some(_) => hi = mid,
        }
    }
    hi
}

/// Replays `image` (the whole log file, header included, already checked by the caller).
/// `apply` gets each record after `checkpoint_lsn`, decoded whole, in log order (the ops
/// borrow `image`, and their vector is reused from one record to the next).
pub fn replay(
    path: &Path,
    image: &[u8],
    dimension: u32,
    checkpoint_lsn: u64,
    policy: RecoveryPolicy,
    mut apply: impl FnMut(u64, &[Op<'_>]) -> Result<()>,
) -> Result<ReplayOutcome> {
    let mut out = ReplayOutcome::default();
    let mut ops = Vec::new();
    let mut pos = WAL_HEADER_LEN;
    let mut ended_stale = false;
    let mut after_skipped_damage = false;
    let skip_damage = |from: usize, to: usize, out: &mut ReplayOutcome| -> Result<()> {
        let reason = format!("{} damaged bytes before the record at byte {to}", to - from);
        match policy {
            RecoveryPolicy::Strict => Err(Error::corrupted(path, from as u64, reason)),
            RecoveryPolicy::Salvage => {
                out.corrupt_records_skipped += 1;
                out.warnings.push(format!(
                    "{}: skipped {reason} (from byte {from})",
                    path.display()
                ));
                Ok(())
            }
        }
    };
    // The flagged valid records after the first damage, found on it. Damage is mid-log if
    // one of them lies after it and continues the log (its lsn above every lsn before the
    // damage and above the checkpoint): a stale record left by an emptying that never
    // reached the disk does not vouch for anything.
    let resync = Resync::new(image);
    let mut flagged: Option<Vec<(usize, u64)>> = None;
    let mut synced_after = |damage_at: usize, last_lsn: u64| -> Result<bool> {
        if flagged.is_none() {
            flagged = Some(flagged_records(&resync, damage_at).map_err(|e| e.at(path))?);
        }
        Ok(flagged
            .iter()
            .flatten()
            .any(|&(at, lsn)| at > damage_at && lsn > last_lsn && lsn > checkpoint_lsn))
    };
    while pos < image.len() {
        let header = match decode_record_header(&image[pos..]) {
            Ok(header) => header,
            Err(HeaderProblem::Oversized(len)) => {
                return Err(Error::corrupted(
                    path,
                    pos as u64 + 8,
                    format!("record declares a {len}-byte body, above the limit"),
                ));
            }
            Err(HeaderProblem::Short | HeaderProblem::NotAHeader) => {
                let next = resync.next(pos + 1).map_err(|e| e.at(path))?;
                let next = match next {
                    Some(next) if synced_after(pos, out.last_lsn)? => Some(next),
                    _ => None,
                };
                match next {
                    Some(next) => {
                        skip_damage(pos, next, &mut out)?;
                        after_skipped_damage = true;
                        pos = next;
                        continue;
                    }
                    None => break,
                }
            }
        };
        let frame_end = pos as u64 + header.frame_len();
        if frame_end > image.len() as u64 {
            break;
        }
        let frame_end = frame_end as usize;
        if !frame_body_crc_ok(&image[pos..frame_end]) {
            let next = resync.next(frame_end).map_err(|e| e.at(path))?;
            let next = match next {
                Some(next) if synced_after(pos, out.last_lsn)? => Some(next),
                _ => None,
            };
            match next {
                Some(next) => {
                    skip_damage(pos, next, &mut out)?;
                    after_skipped_damage = true;
                    pos = next;
                    continue;
                }
                None => break,
            }
        }
        // (lsn 0 is never written: that one is forged or damaged.)
        let stale = header.lsn != 0 && header.lsn <= out.last_lsn && header.lsn <= checkpoint_lsn;
        if stale {
            // A record from before an emptying of the log, which the checkpoint covers:
            // the log is emptied by writing new records over the start of the old ones, so
            // older records follow the newest, in every generation's order. Everything
            // from here is stale.
            ended_stale = true;
            break;
        }
        // The first record past the checkpoint is `checkpoint_lsn + 1`. One after old
        // records (at or below the checkpoint) that skips ahead was written after records
        // that never reached the disk: an emptying writes the new records over the old
        // ones, so an old record still whole where the first new one belongs means that
        // one was lost, and so were those that follow. The log ends there, like at a torn
        // tail. (After damage that salvage skipped, the numbers of the skipped records are
        // missing: the check does not apply.)
        let skipped_ahead =
            out.last_lsn != 0 && out.last_lsn <= checkpoint_lsn && header.lsn > checkpoint_lsn + 1;
        if skipped_ahead && !after_skipped_damage {
            break;
        }
        // A log whose first record skips ahead is no crash's doing: a checkpoint empties
        // the log only once its index is durable, and the record after it is then
        // `checkpoint_lsn + 1`. The index is older than the log (restored from an older
        // copy, say), and the records between them are gone with the log they were in.
        let starts_ahead = out.last_lsn == 0 && header.lsn > checkpoint_lsn.saturating_add(1);
        if starts_ahead && !after_skipped_damage {
            let reason = format!(
                "the log starts at record {}, but ids.idx covers records only up to {checkpoint_lsn}: \
                 records {} to {} are missing (is ids.idx older than the log?)",
                header.lsn,
                checkpoint_lsn + 1,
                header.lsn - 1
            );
            match policy {
                RecoveryPolicy::Strict => return Err(Error::corrupted(path, pos as u64, reason)),
                // As for mid-log damage: the missing records are counted, the rest is kept.
                RecoveryPolicy::Salvage => {
                    out.corrupt_records_skipped += header.lsn - checkpoint_lsn - 1;
                    out.warnings.push(format!(
                        "{}: {reason}; replayed the log from record {}",
                        path.display(),
                        header.lsn
                    ));
                }
            }
        }
        after_skipped_damage = false;
        check_record(path, pos, &header, out.last_lsn)?;
        out.last_lsn = header.lsn;
        if header.lsn > checkpoint_lsn {
            let body = &image[pos + RECORD_HEADER_LEN..frame_end - 4];
            decode_batch_into(body, dimension, &mut ops).map_err(|e| {
                Error::corrupted(
                    path,
                    (pos + RECORD_HEADER_LEN) as u64 + e.offset,
                    format!("record {} passed its checksum but {}", header.lsn, e.reason),
                )
            })?;
            apply(header.lsn, &ops)?;
            out.records_replayed += 1;
        }
        pos = frame_end;
    }
    out.end_offset = pos as u64;
    // Torn bytes are those up to the old records the log was emptied over, if any, and
    // before the zeros the file ends with (the writer's zero-filled space): neither of
    // those is damage.
    let torn_end = if ended_stale {
        pos
    } else {
        stale_record_after(&resync, pos, checkpoint_lsn)
            .map_err(|e| e.at(path))?
            .unwrap_or(image.len())
    };
    let torn = &image[pos..torn_end];
    out.torn_bytes = (torn.len() - trailing_zeros(torn)) as u64;
    Ok(out)
}

/// Rules 5 and 6: the record's kind is known and its sequence number increases, within
/// `LSN_MAX`.
fn check_record(path: &Path, pos: usize, header: &RecordHeader, last_lsn: u64) -> Result<()> {
    if header.kind == 0 || header.kind > RECORD_KIND_MAX {
        return Err(Error::UnsupportedVersion {
            file: path.into(),
            what: "record kind",
            found: u32::from(header.kind),
            supported: u32::from(RECORD_KIND_MAX),
        });
    }
    if header.lsn > LSN_MAX {
        return Err(Error::corrupted(
            path,
            pos as u64 + 12,
            format!(
                "record sequence number {} is above the limit {LSN_MAX}",
                header.lsn
            ),
        ));
    }
    if header.lsn <= last_lsn {
        return Err(Error::corrupted(
            path,
            pos as u64 + 12,
            format!(
                "record sequence number {} does not follow {last_lsn}",
                header.lsn
            ),
        ));
    }
    Ok(())
}

/// The offset of the first whole, checksum-valid record at or after `from`, if it is an old
/// one (at or below the checkpoint) that an emptying of the log wrote over.
fn stale_record_after(
    resync: &Resync<'_>,
    from: usize,
    checkpoint_lsn: u64,
) -> Result<Option<usize>, TooDense> {
    let Some(at) = resync.next(from)? else {
        return Ok(None);
    };
    let stale = decode_record_header(&resync.image[at..])
        .is_ok_and(|h| h.lsn != 0 && h.lsn <= checkpoint_lsn);
    Ok(stale.then_some(at))
}

/// The offset and lsn of every whole, checksum-valid record after `from` that carries
/// `RECORD_FLAG_AFTER_SYNC`.
fn flagged_records(resync: &Resync<'_>, from: usize) -> Result<Vec<(usize, u64)>, TooDense> {
    let mut found = Vec::new();
    let mut at = resync.next(from + 1)?;
    while let Some(pos) = at {
        // `Resync::next` only returns whole, checksum-valid records.
        let Ok(header) = decode_record_header(&resync.image[pos..]) else {
            break;
        };
        if header.flags & RECORD_FLAG_AFTER_SYNC != 0 {
            found.push((pos, header.lsn));
        }
        at = resync.next(pos + header.frame_len() as usize)?;
    }
    Ok(found)
}

/// Finding the next whole record after damage, within a budget of checksum work.
///
/// Every candidate whose header checks out costs a CRC over its declared body, so a forged
/// log of overlapping headers that each declare a long body would make resynchronizing
/// quadratic in the log's size: a hang. A real log, however damaged, examines each byte a
/// few times at most; past [`RESYNC_WORK_PER_LOG_BYTE`] bytes of failed checks per log byte,
/// replay refuses the log as corrupt instead.
struct Resync<'a> {
    image: &'a [u8],
    budget: std::cell::Cell<u64>,
}

/// See [`Resync`].
const RESYNC_WORK_PER_LOG_BYTE: u64 = 8;

/// [`Resync`] ran out of budget at this offset.
#[derive(Debug)]
struct TooDense(usize);

impl TooDense {
    fn at(self, path: &Path) -> Error {
        Error::corrupted(
            path,
            self.0 as u64,
            "damage too dense to resynchronize: forged or overlapping record headers",
        )
    }
}

impl<'a> Resync<'a> {
    fn new(image: &'a [u8]) -> Self {
        let budget = (image.len() as u64).saturating_mul(RESYNC_WORK_PER_LOG_BYTE);
        Resync {
            image,
            budget: std::cell::Cell::new(budget.saturating_add(1 << 20)),
        }
    }

    /// The offset of the first whole, checksum-valid record starting at or after `from`.
    fn next(&self, from: usize) -> Result<Option<usize>, TooDense> {
        let image = self.image;
        let sync = RECORD_SYNC.to_le_bytes();
        let mut at = from;
        while at + RECORD_HEADER_LEN <= image.len() {
            // memmem is SIMD: the writer's zero-filled space (up to 8 MiB) after a crash is
            // crossed in well under a millisecond, where a byte-by-byte search took several.
            let Some(offset) = memchr::memmem::find(&image[at..], &sync) else {
                return Ok(None);
            };
            at += offset;
            if let Ok(header) = decode_record_header(&image[at..]) {
                let end = at as u64 + header.frame_len();
                if end <= image.len() as u64 {
                    if frame_body_crc_ok(&image[at..end as usize]) {
                        return Ok(Some(at));
                    }
                    let left = self.budget.get().checked_sub(header.frame_len());
                    self.budget.set(left.ok_or(TooDense(at))?);
                }
            }
            at += 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::wal::{
        encode_header, BatchEncoder, RECORD_FLAG_AFTER_SYNC, RECORD_OVERHEAD,
    };
    use crate::types::Id;

    /// A log of one-record groups, each written after the previous one was synced.
    fn log(records: &[u64]) -> (Vec<u8>, Vec<usize>) {
        log_flagged(records, RECORD_FLAG_AFTER_SYNC)
    }

    fn log_flagged(records: &[u64], flags: u8) -> (Vec<u8>, Vec<usize>) {
        let mut image = encode_header(2, 0).to_vec();
        let mut starts = Vec::new();
        for &lsn in records {
            starts.push(image.len());
            let mut enc = BatchEncoder::new(16);
            enc.upsert(&Id::Int(lsn), &[lsn as f32, 0.5]);
            image.extend(enc.finish_with_flags(lsn, flags));
        }
        (image, starts)
    }

    #[test]
    fn the_ops_estimate_counts_a_short_log_exactly() {
        let (image, starts) = log(&[1, 2, 3, 4, 5]);
        assert_eq!(ops_estimate(&image, 0), 5);
        // Records at or below the checkpoint are not replayed.
        assert_eq!(ops_estimate(&image, 3), 2);
        // A torn tail ends the count, and so does a stale record (its lsn does not rise).
        assert_eq!(ops_estimate(&image[..starts[3] + 10], 0), 3);
        let (stale, _) = log(&[1, 2, 3, 1, 2]);
        assert_eq!(ops_estimate(&stale, 0), 3);
        // A batch counts its ops.
        let mut batch = encode_header(2, 0).to_vec();
        let mut enc = BatchEncoder::new(64);
        for n in 0..7 {
            enc.upsert(&Id::Int(n), &[1.0, 2.0]);
        }
        batch.extend(enc.finish_with_flags(1, 0));
        assert_eq!(ops_estimate(&batch, 0), 7);
    }

    #[test]
    fn the_ops_estimate_of_a_long_log_scales_its_first_records() {
        let lsns: Vec<u64> = (1..=1000).collect();
        let (image, starts) = log(&lsns);
        // Records of one size: the sample's share of the bytes is exact, plus a quarter.
        assert_eq!(ops_estimate(&image, 0), 1250);
        // After a checkpoint the sample starts at the first record past it...
        assert_eq!(ops_estimate(&image, 100), 1125);
        // ...if one comes within four samples' worth of older records: no walk of them all.
        assert_eq!(ops_estimate(&image, 500), 0);
        // Zeros the writer filled ahead of its records are not records.
        let mut padded = image.clone();
        padded.resize(image.len() + (image.len() - WAL_HEADER_LEN), 0);
        assert_eq!(ops_estimate(&padded, 0), 1250);
        // The log ends inside the sample's last record: the sample is the count.
        assert_eq!(
            ops_estimate(&image[..starts[63] + RECORD_HEADER_LEN + 4], 0),
            64
        );
    }

    /// A log of `records` one-upsert records of dimension 1024 (about 4 KiB each) from
    /// `first_lsn` on, after the header.
    fn wide_records(image: &mut Vec<u8>, first_lsn: u64, records: u64) {
        for lsn in first_lsn..first_lsn + records {
            let mut enc = BatchEncoder::new(4200);
            enc.upsert(&Id::Int(lsn), &[0.5; 1024]);
            image.extend(enc.finish_with_flags(lsn, 0));
        }
    }

    #[test]
    fn the_ops_estimate_ends_where_the_records_after_the_checkpoint_end() {
        // A log emptied at a checkpoint (lsn 1000) keeps its length: 300 newer records were
        // written over the start of 1000 older ones, whose last 700 are still there.
        let mut image = encode_header(1024, 0).to_vec();
        wide_records(&mut image, 1001, 300);
        let newer_end = image.len();
        wide_records(&mut image, 301, 700);
        let estimate = ops_estimate(&image, 1000);
        // Found within LIVE_END_PRECISION (16 records here), plus a quarter.
        assert!((355..=395).contains(&estimate), "estimate {estimate}");
        assert_eq!(ops_estimate(&image[..newer_end], 1000), 375);
    }

    #[test]
    fn a_forged_op_count_saturates_the_estimate() {
        let lsns: Vec<u64> = (1..=100).collect();
        let (mut image, starts) = log(&lsns);
        for &at in &starts {
            let count = at + RECORD_HEADER_LEN;
            image[count..count + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        // No panic and no wrap-around: the caller bounds it by the files' sizes.
        assert!(ops_estimate(&image, 0) >= 64 * u64::from(u32::MAX));
    }

    fn run(image: &[u8], policy: RecoveryPolicy) -> Result<(ReplayOutcome, Vec<u64>)> {
        run_after(image, 0, policy)
    }

    /// Replays `image` after a checkpoint at `checkpoint_lsn`: the outcome and the lsns applied.
    fn run_after(
        image: &[u8],
        checkpoint_lsn: u64,
        policy: RecoveryPolicy,
    ) -> Result<(ReplayOutcome, Vec<u64>)> {
        let mut seen = Vec::new();
        let out = replay(
            Path::new("t.wal"),
            image,
            2,
            checkpoint_lsn,
            policy,
            |lsn, ops| {
                assert_eq!(ops.len(), 1);
                seen.push(lsn);
                Ok(())
            },
        )?;
        Ok((out, seen))
    }

    #[test]
    fn a_cut_at_every_byte_keeps_every_whole_record() {
        let (image, starts) = log(&[1, 2, 3]);
        for cut in WAL_HEADER_LEN..=image.len() {
            let (out, seen) = run(&image[..cut], RecoveryPolicy::Strict).expect("replay");
            let whole = starts
                .iter()
                .skip(1)
                .chain([&image.len()])
                .filter(|&&end| end <= cut)
                .count();
            assert_eq!(seen.len(), whole, "cut at {cut}");
            // What is neither a record nor counted torn is the zeros the cut ends with.
            let counted = out.end_offset as usize + out.torn_bytes as usize;
            assert!(counted <= cut, "cut at {cut}");
            assert!(image[counted..cut].iter().all(|&b| b == 0), "cut at {cut}");
        }
    }

    #[test]
    fn a_flip_mid_log_is_skipped_or_refused_per_policy() {
        let (mut image, starts) = log(&[1, 2, 3]);
        image[starts[1] + RECORD_HEADER_LEN + 3] ^= 0x10;
        let (out, seen) = run(&image, RecoveryPolicy::Salvage).expect("salvage");
        assert_eq!(seen, vec![1, 3]);
        assert_eq!(out.corrupt_records_skipped, 1);
        let err = run(&image, RecoveryPolicy::Strict).expect_err("strict");
        assert!(matches!(err, Error::Corrupted { offset, .. } if offset == starts[1] as u64));
    }

    #[test]
    fn damage_followed_only_by_records_never_synced_is_a_torn_tail() {
        // One unsynced group of three records, torn in the middle by a crash that kept the
        // last one's sectors: records after the damage are cut under either policy, so the
        // state is a prefix of the log (a flag on the last record makes it mid-log damage).
        for (flags, policy, seen) in [
            (0, RecoveryPolicy::Strict, vec![1]),
            (0, RecoveryPolicy::Salvage, vec![1]),
            (RECORD_FLAG_AFTER_SYNC, RecoveryPolicy::Salvage, vec![1, 3]),
        ] {
            let (mut image, starts) = log_flagged(&[1, 2, 3], 0);
            let (last, _) = log_flagged(&[3], flags);
            image.truncate(starts[2]);
            image.extend(last);
            image[starts[1] + RECORD_HEADER_LEN + 3] ^= 0x10;
            let (out, got) = run(&image, policy).expect("replay");
            assert_eq!(got, seen, "flags {flags}, {policy:?}");
            if flags == 0 {
                assert_eq!(out.end_offset as usize, starts[1]);
                assert_eq!(out.corrupt_records_skipped, 0);
            }
        }
    }

    #[test]
    fn a_flip_in_the_last_record_is_a_torn_tail() {
        let (mut image, starts) = log(&[1, 2]);
        image[starts[1] + RECORD_HEADER_LEN + 1] ^= 1;
        let (out, seen) = run(&image, RecoveryPolicy::Strict).expect("strict");
        assert_eq!(seen, vec![1]);
        assert_eq!(out.end_offset as usize, starts[1]);
    }

    #[test]
    fn zeros_after_the_last_record_end_the_log_and_are_not_counted_torn() {
        // The writer's zero-filled space ahead of its records: the end of the log, cut at
        // open, but no damage.
        let (mut image, _) = log(&[1]);
        let end = image.len();
        image.extend(std::iter::repeat_n(0u8, 4096));
        let (out, seen) = run(&image, RecoveryPolicy::Strict).expect("strict");
        assert_eq!(
            (seen, out.end_offset as usize, out.torn_bytes),
            (vec![1], end, 0)
        );
        // A torn write into that space: its bytes count, the zeros after them do not.
        image[end + 10] = 0xAB;
        image[end + 99] = 0xCD;
        let (out, seen) = run(&image, RecoveryPolicy::Strict).expect("strict");
        assert_eq!(
            (seen, out.end_offset as usize, out.torn_bytes),
            (vec![1], end, 100)
        );
    }

    #[test]
    fn stale_records_after_newer_ones_end_the_log_unless_the_checkpoint_misses_them() {
        // Records 7 and 8 written over the start of an older log (3..6) whose emptying
        // never reached the disk: with a checkpoint at 6 the old ones are stale and cut;
        // with none (a forged or broken log) they are refused as corruption.
        let (mut image, _) = log(&[7, 8]);
        let (old, starts) = log(&[3, 4, 5, 6]);
        let end_of_new = image.len();
        image.extend_from_slice(&old[starts[2]..]);
        let (out, seen) =
            run_after(&image, 6, RecoveryPolicy::Strict).expect("stale records are a tail");
        assert_eq!((seen, out.end_offset as usize), (vec![7, 8], end_of_new));
        // Records above the checkpoint that go back (7, 8, then 7 again) are no emptying's
        // doing: refused under either policy.
        let (again, again_starts) = log(&[5, 6, 7, 8]);
        let mut image = log(&[7, 8]).0;
        image.extend_from_slice(&again[again_starts[2]..]);
        for policy in [RecoveryPolicy::Strict, RecoveryPolicy::Salvage] {
            let err = run_after(&image, 6, policy).expect_err("not stale: above the checkpoint");
            assert_eq!(err.code(), "KEEL_CORRUPT");
        }
    }

    #[test]
    fn a_log_that_starts_past_the_record_after_the_checkpoint_is_refused_or_reported() {
        // Records 7 and 8 against a checkpoint at 4: records 5 and 6 were in a log that a
        // later checkpoint emptied, so ids.idx is older than the log.
        let (image, _) = log(&[7, 8]);
        let err = run_after(&image, 4, RecoveryPolicy::Strict).expect_err("records 5 and 6");
        assert_eq!(err.code(), "KEEL_CORRUPT");
        assert!(
            err.to_string().contains("records 5 to 6 are missing"),
            "{err}"
        );
        let (out, seen) = run_after(&image, 4, RecoveryPolicy::Salvage).expect("salvage");
        assert_eq!(seen, vec![7, 8], "salvage keeps what the log has");
        assert_eq!(out.corrupt_records_skipped, 2, "records 5 and 6");
        assert_eq!(out.end_offset as usize, image.len());
        assert!(
            out.warnings[0].contains("records 5 to 6 are missing"),
            "{:?}",
            out.warnings
        );
        // The record right after the checkpoint is where a log starts.
        let (_, seen) = run_after(&image, 6, RecoveryPolicy::Strict).expect("consecutive");
        assert_eq!(seen, vec![7, 8]);
    }

    #[test]
    fn a_new_record_after_an_old_one_that_skips_ahead_ends_the_log() {
        // Records 7 and 8 were written over the start of a log emptied at checkpoint 6
        // (records 3..6); only 8 reached the disk, so record 3 is still whole where 7
        // belongs. 8 was written after a record that is lost: the log ends before it.
        let (old, old_starts) = log(&[3, 4, 5, 6]);
        let (new, new_starts) = log(&[7, 8]);
        let mut image = old[..old_starts[1]].to_vec();
        image.extend_from_slice(&new[new_starts[1]..]);
        let (out, seen) = run_after(&image, 6, RecoveryPolicy::Strict).expect("a torn tail");
        assert_eq!((seen, out.end_offset as usize), (vec![], old_starts[1]));
        // The first record past the checkpoint where it belongs goes on as before.
        let mut image = old[..old_starts[1]].to_vec();
        let (next, next_starts) = log(&[4, 7]);
        image.extend_from_slice(&next[next_starts[1]..]);
        let (_, seen) = run_after(&image, 6, RecoveryPolicy::Strict).expect("consecutive");
        assert_eq!(seen, vec![7]);
    }

    #[test]
    fn older_generations_after_old_records_end_the_log_and_are_not_torn() {
        // An emptied log keeps its old records after the new ones, generation after
        // generation: records 5 and 6 (emptied at checkpoint 6), then what remained of an
        // older generation (2, 3). Nothing was written since: everything is skipped, the
        // log ends where the lsns stop increasing, and none of it counts as torn.
        let (mut image, _) = log(&[5, 6]);
        let end_of_newer = image.len();
        let (older, starts) = log(&[1, 2, 3]);
        image.extend_from_slice(&older[starts[1]..]);
        let (out, seen) = run_after(&image, 6, RecoveryPolicy::Strict).expect("stale");
        assert_eq!(
            (seen, out.end_offset as usize, out.torn_bytes),
            (vec![], end_of_newer, 0)
        );
        // A torn new record over them: its bytes count, the old records after them do not.
        let (mut torn, _) = log(&[7]);
        let end_of_new = torn.len();
        let (next, _) = log(&[8]);
        torn.extend_from_slice(&next[WAL_HEADER_LEN..WAL_HEADER_LEN + 30]);
        let at_old = torn.len();
        let (old, old_starts) = log(&[3, 4]);
        torn.extend_from_slice(&old[old_starts[1]..]);
        let (out, seen) = run_after(&torn, 6, RecoveryPolicy::Strict).expect("torn");
        assert_eq!(
            (seen, out.end_offset as usize, out.torn_bytes),
            (vec![7], end_of_new, (at_old - end_of_new) as u64)
        );
    }

    #[test]
    fn stale_records_not_aligned_with_the_newer_ones_end_the_log_too() {
        // The newer records (7, 8; longer ids) end inside an old one: the rest of it is
        // damage, and the whole old records after it, flagged as they are, come from before
        // the checkpoint, so they vouch for nothing: a torn tail, under strict too.
        let mut image = encode_header(2, 0).to_vec();
        for lsn in [7u64, 8] {
            let mut enc = BatchEncoder::new(64);
            enc.upsert(
                &Id::from("a longer id than the old ones"),
                &[lsn as f32, 0.5],
            );
            image.extend(enc.finish_with_flags(lsn, RECORD_FLAG_AFTER_SYNC));
        }
        let end_of_new = image.len();
        let (old, starts) = log(&[3, 4, 5, 6]);
        let inside = starts
            .iter()
            .copied()
            .find(|&s| s > end_of_new)
            .expect("an old record");
        image.extend_from_slice(&old[end_of_new..]);
        assert!(
            inside > end_of_new,
            "the newer records end inside an old one"
        );
        for policy in [RecoveryPolicy::Strict, RecoveryPolicy::Salvage] {
            let (out, seen) = run_after(&image, 6, policy).expect("a torn tail");
            assert_eq!(seen, vec![7, 8]);
            assert_eq!(
                (out.end_offset as usize, out.corrupt_records_skipped),
                (end_of_new, 0)
            );
        }
    }

    #[test]
    fn forged_overlapping_headers_are_refused_quickly_not_resynchronized_forever() {
        // 4 MiB of record headers, one every 24 bytes, each declaring a body that runs to
        // the end of the file (all failing their CRC), after one damaged byte: a check of
        // every candidate would hash ~350 GB. Refused as corrupt within the budget instead.
        let (mut image, _) = log(&[1]);
        image.push(0xAA);
        let len = image.len() + (4 << 20);
        while image.len() + RECORD_HEADER_LEN <= len {
            let body_len = (len - image.len() - RECORD_OVERHEAD) as u32;
            let mut header = [0u8; RECORD_HEADER_LEN];
            header[..4].copy_from_slice(&RECORD_SYNC.to_le_bytes());
            header[4] = 1;
            header[8..12].copy_from_slice(&body_len.to_le_bytes());
            header[12..20].copy_from_slice(&2u64.to_le_bytes());
            let crc = crate::format::crc32(&header[..20]);
            header[20..].copy_from_slice(&crc.to_le_bytes());
            image.extend_from_slice(&header);
        }
        image.resize(len, 0);
        let started = std::time::Instant::now();
        for policy in [RecoveryPolicy::Strict, RecoveryPolicy::Salvage] {
            let err = run(&image, policy).expect_err("too dense");
            assert_eq!(err.code(), "KEEL_CORRUPT", "{err}");
        }
        // Not a timing test: the point is that it returns at all (unbounded it takes hours).
        eprintln!("refused in {:?}", started.elapsed());
    }

    #[test]
    fn records_at_or_below_the_checkpoint_are_not_applied() {
        let (image, _) = log(&[4, 5, 6]);
        let (_, seen) = run_after(&image, 5, RecoveryPolicy::Strict).expect("replay");
        assert_eq!(seen, vec![6]);
    }
}
