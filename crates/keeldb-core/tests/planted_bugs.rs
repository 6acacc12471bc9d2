//! Each planted bug is caught by a check, and the same check passes without it: proof that
//! the reliability checks bite. Built only with the test-only `planted-bugs` feature
//! (`npm run planted-bugs`); see docs/RELIABILITY.md.
//!
//! Three checks are used:
//!
//! - A power-loss simulation on real files (`PowerLossSim`). It observes every write, sync,
//!   rename, truncation and acknowledgement the engine makes (`keeldb_core::planted`), keeps
//!   the bytes of each file as of its last sync (by inode) and the names of the collection
//!   directory as of its last directory sync, and at each point where that durable image
//!   changes rebuilds it in a fresh directory, opens it and checks every acknowledged
//!   operation. What it models: a power loss that keeps exactly what was synced and loses
//!   everything else. What it does not: outcomes that keep some unsynced writes, partly or
//!   out of order, and torn sectors (that needs the simulated disk, planned separately).
//! - Torn-tail recovery on real files: tear the last record, recover, append, crash, reopen
//!   under the strict policy.
//! - The hostile-length cases of `hostile_files.rs`, in a child under an address-space limit.

#![cfg(feature = "planted-bugs")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{
    coll_dir, create, flat, ids, open, open_ok, put, read, vector, wal_path, write, NAME,
};
use keeldb_core::planted::{self, Bug, Event, EventKind};
use keeldb_core::{Db, DbOptions, Durability, Id, RecoveryPolicy};

/// The planted bug and the observer are process-wide: one scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const DIM: u32 = 4;
/// Ids the power-loss workload uses.
const UNIVERSE: u64 = 24;

#[test]
#[ignore = "runs only as the child process of another test (tests/common/child.rs)"]
fn child_process() {
    common::child::main();
}

/// One durable image of the collection directory: file name and bytes.
type Image = Vec<(String, Arc<Vec<u8>>)>;

/// What a power loss would leave, followed event by event.
struct PowerLossSim {
    dir: PathBuf,
    /// Bytes of each file (by inode) as of its last sync.
    durable: HashMap<u64, Arc<Vec<u8>>>,
    /// Names in the collection directory (name -> inode) as of its last directory sync.
    names: BTreeMap<String, u64>,
    /// Acknowledgements so far.
    acks: usize,
    /// Every distinct durable image, with the acknowledgements made while it was current.
    points: Vec<(Image, usize)>,
    events: Vec<Event>,
    /// Every file whose bytes are remembered, kept open so that its inode is never reused
    /// for another file while the simulation may still name it.
    kept_open: Vec<fs::File>,
}

impl PowerLossSim {
    /// Starts from `dir` as it is now, all of it durable (a cleanly closed database).
    fn new(dir: &Path) -> Self {
        let mut sim = PowerLossSim {
            dir: dir.to_owned(),
            durable: HashMap::new(),
            names: BTreeMap::new(),
            acks: 0,
            points: Vec::new(),
            events: Vec::new(),
            kept_open: Vec::new(),
        };
        sim.names = sim.listing();
        for name in sim.names.clone().keys() {
            sim.remember(&dir.join(name));
        }
        sim
    }

    /// Records the bytes of `path` now as its durable contents.
    fn remember(&mut self, path: &Path) {
        let file = fs::File::open(path).expect("open a synced file");
        let ino = file.metadata().expect("stat").ino();
        self.durable.insert(ino, Arc::new(read(path)));
        self.kept_open.push(file);
    }

    fn listing(&self) -> BTreeMap<String, u64> {
        fs::read_dir(&self.dir)
            .expect("list the collection")
            .map(|e| e.expect("entry"))
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| {
                let ino = e.metadata().expect("stat").ino();
                (e.file_name().to_string_lossy().into_owned(), ino)
            })
            .collect()
    }

    fn image(&self) -> Image {
        self.names
            .iter()
            .map(|(name, ino)| {
                let bytes = self.durable.get(ino).cloned().unwrap_or_default();
                (name.clone(), bytes)
            })
            .collect()
    }

    fn on_event(&mut self, event: &Event) {
        self.events.push(event.clone());
        let in_dir = |p: &Path| p.parent() == Some(self.dir.as_path());
        match event.kind {
            EventKind::SyncFile if in_dir(&event.path) => {
                self.points.push((self.image(), self.acks));
                self.remember(&event.path.clone());
            }
            EventKind::SyncDir if event.path == self.dir => {
                self.points.push((self.image(), self.acks));
                self.names = self.listing();
            }
            EventKind::Ack => self.acks += 1,
            _ => {}
        }
    }
}

/// The expected contents: id -> vector seed.
type Model = BTreeMap<u64, u64>;

/// Runs a fixed workload of fsynced upserts, re-upserts and deletes with small checkpoint
/// thresholds and one explicit checkpoint, returning the model after each acknowledgement.
fn workload(dir: &Path) -> Vec<Model> {
    let options = DbOptions {
        durability: Durability::Fsync,
        checkpoint_threshold_bytes: 900,
        checkpoint_scales_with_index: false,
        ..DbOptions::default()
    };
    let db = Db::open(dir, options).expect("open");
    let c = db.collection(NAME).expect("collection");
    let mut model = Model::new();
    let mut models = vec![model.clone()];
    for i in 0..40u64 {
        if i % 5 == 4 {
            let doomed = [i % UNIVERSE, (i * 7) % UNIVERSE];
            c.delete(&ids(&doomed), None).expect("delete");
            for n in doomed {
                model.remove(&n);
            }
        } else {
            let batch: Vec<u64> = (0..1 + i % 3).map(|k| (i * 3 + k * 5) % UNIVERSE).collect();
            let mut batch = batch;
            batch.dedup();
            let seed = 100 + i;
            let vectors: Vec<f32> = batch.iter().flat_map(|_| vector(seed, DIM)).collect();
            c.upsert(&ids(&batch), &vectors, None).expect("upsert");
            for n in batch {
                model.insert(n, seed);
            }
        }
        models.push(model.clone());
        if i == 20 {
            c.checkpoint().expect("checkpoint");
        }
    }
    drop(c);
    db.close().expect("close");
    models
}

/// Whether the database in `dir` holds exactly `model`.
fn holds(dir: &Path, model: &Model) -> Result<(), String> {
    let db = open(dir, RecoveryPolicy::Strict).map_err(|e| format!("open: {} {e}", e.code()))?;
    let c = db.collection(NAME).map_err(|e| e.to_string())?;
    for n in 0..UNIVERSE {
        let got = c.get(&Id::Int(n)).map_err(|e| e.to_string())?;
        let want = model.get(&n).map(|seed| vector(*seed, DIM));
        if got != want {
            return Err(format!("id {n}: expected {:?}", model.get(&n)));
        }
    }
    db.close().map_err(|e| e.to_string())
}

/// The power-loss check: every distinct durable image of the workload recovers every
/// acknowledged operation (and the one in flight whole or not at all). Returns how many
/// images were checked.
fn power_loss_check() -> Result<String, String> {
    let root = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(root.path(), DIM);
    drop(c);
    db.close().expect("close");
    let sim = Arc::new(Mutex::new(PowerLossSim::new(&coll_dir(root.path()))));
    let observer = Arc::clone(&sim);
    planted::observe(move |e| observer.lock().expect("sim").on_event(e));
    let models = workload(root.path());
    planted::stop_observing();
    let mut sim = Arc::try_unwrap(sim)
        .ok()
        .expect("sole owner")
        .into_inner()
        .expect("sim");
    let end = (sim.image(), sim.acks);
    sim.points.push(end);
    let order = trace_rules(&sim.events, &coll_dir(root.path()));
    let mut failures = Vec::new();
    for (k, (image, acks)) in sim.points.iter().enumerate() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let col = coll_dir(scratch.path());
        fs::create_dir(&col).expect("mkdir");
        for (name, bytes) in image {
            write(&col.join(name), bytes);
        }
        let acked = &models[*acks];
        let in_flight = models.get(acks + 1);
        let ok = holds(scratch.path(), acked);
        let ok = match (ok, in_flight) {
            (Err(first), Some(next)) => holds(scratch.path(), next).map_err(|_| first),
            (result, _) => result,
        };
        if let Err(why) = ok {
            failures.push(format!("crash point {k} (after {acks} acks): {why}"));
        }
    }
    if failures.is_empty() && order.is_empty() {
        Ok(format!(
            "{} crash points, {} acks, {} events",
            sim.points.len(),
            sim.acks,
            sim.events.len()
        ))
    } else {
        Err(format!(
            "{} of {} crash points lose acknowledged writes (first: {}); ordering rules broken: {}",
            failures.len(),
            sim.points.len(),
            failures.first().map_or("none", String::as_str),
            if order.is_empty() {
                "none".to_owned()
            } else {
                order.join("; ")
            }
        ))
    }
}

/// Ordering rules over the event trace, a second and cheaper statement of what the power-loss
/// simulation checks: (1) no acknowledgement while the log has written but unsynced bytes;
/// (2) every rename is followed by a sync of its directory before the next acknowledgement
/// or log truncation; (3) the log is truncated (other than a torn tail at open) only after
/// the vector file was synced and the index renamed into place and made durable.
fn trace_rules(events: &[Event], dir: &Path) -> Vec<String> {
    let wal = dir.join("vectors.wal");
    let vectors = dir.join("vectors.dat");
    let mut broken = Vec::new();
    let mut log_unsynced = false;
    let mut pending_rename: Option<PathBuf> = None;
    let (mut vectors_synced, mut index_durable) = (false, false);
    for (i, e) in events.iter().enumerate() {
        match e.kind {
            EventKind::Write if e.path == wal => log_unsynced = true,
            EventKind::SyncFile if e.path == wal => log_unsynced = false,
            EventKind::SyncFile if e.path == vectors => vectors_synced = true,
            EventKind::Rename => pending_rename = Some(e.path.clone()),
            EventKind::SyncDir
                if pending_rename.as_ref().and_then(|p| p.parent()) == Some(e.path.as_path()) =>
            {
                index_durable |= pending_rename
                    .take()
                    .is_some_and(|p| p.ends_with("ids.idx"));
            }
            EventKind::Ack | EventKind::Truncate => {
                if e.kind == EventKind::Ack && log_unsynced {
                    broken.push(format!("event {i}: ack with unsynced log bytes"));
                }
                if let Some(p) = &pending_rename {
                    broken.push(format!(
                        "event {i}: {:?} before the rename to {} was made durable",
                        e.kind,
                        p.display()
                    ));
                }
                if e.kind == EventKind::Truncate && e.path == wal {
                    if !(vectors_synced && index_durable) {
                        broken.push(format!(
                            "event {i}: log cut before the checkpoint was durable"
                        ));
                    }
                    vectors_synced = false;
                    index_durable = false;
                }
            }
            _ => {}
        }
    }
    broken.truncate(3);
    broken
}

/// Torn-tail recovery: the last record is torn, recovery runs, two more records are
/// acknowledged, the process crashes; a strict reopen must hold every acknowledged record
/// and report no damage.
fn torn_tail_check() -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = create(dir.path(), DIM);
    put(&c, &[1]);
    put(&c, &[2]);
    put(&c, &[3]);
    drop(c);
    drop(db);
    let path = wal_path(dir.path());
    let mut log = read(&path);
    log.truncate(log.len() - 7); // record 3 torn mid-write: never acknowledged
    write(&path, &log);
    let db = open_ok(dir.path());
    let c = db.collection(NAME).expect("collection");
    put(&c, &[4]);
    c.upsert(&ids(&[5, 6]), &flat(&[5, 6], DIM), None)
        .expect("upsert");
    drop(c);
    drop(db);
    let db = open(dir.path(), RecoveryPolicy::Strict)
        .map_err(|e| format!("strict reopen: {} {e}", e.code()))?;
    let c = db.collection(NAME).expect("collection");
    for n in [1, 2, 4, 5, 6] {
        if c.get(&Id::Int(n)).map_err(|e| e.to_string())? != Some(vector(n, DIM)) {
            return Err(format!("acknowledged id {n} lost"));
        }
    }
    let stats = c.stats().map_err(|e| e.to_string())?;
    if stats.corrupt_records_skipped != 0 {
        return Err(format!("{} corrupt records", stats.corrupt_records_skipped));
    }
    db.close().map_err(|e| e.to_string())?;
    Ok("records 1, 2, 4, 5, 6 recovered under strict".to_owned())
}

/// The hostile-length cases in limited children, with `plant` in their environment.
fn hostile_lengths_check(plant: Option<&str>) -> Result<String, String> {
    let failures: Vec<String> = common::hostile::CASES
        .iter()
        .filter_map(|case| common::hostile::run_case(case, plant).err())
        .collect();
    match failures.first() {
        None => Ok(format!(
            "{} hostile length cases refused",
            common::hostile::CASES.len()
        )),
        Some(first) => Err(format!(
            "{} of {} cases failed; first: {first}",
            failures.len(),
            common::hostile::CASES.len()
        )),
    }
}

/// Runs `check` without and then with `bug` planted: it must pass, then fail.
fn assert_caught(bug: Bug, checker: &str, check: impl Fn() -> Result<String, String>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    planted::plant(None);
    let clean = check();
    planted::plant(Some(bug));
    let planted_result = check();
    planted::plant(None);
    let clean = clean.unwrap_or_else(|why| panic!("{checker} fails without a planted bug: {why}"));
    match planted_result {
        Ok(summary) => panic!("planted bug {}: NOT CAUGHT by {checker} ({summary})", bug.name()),
        Err(why) => println!(
            "planted bug {:<24} CAUGHT by {checker}\n    without it: {clean}\n    with it:    {why}",
            bug.name()
        ),
    }
}

#[test]
fn ack_before_fsync_is_caught() {
    assert_caught(
        Bug::AckBeforeFsync,
        "the power-loss simulation",
        power_loss_check,
    );
}

#[test]
fn no_dir_fsync_after_rename_is_caught() {
    assert_caught(
        Bug::NoDirFsync,
        "the power-loss simulation",
        power_loss_check,
    );
}

#[test]
fn cutting_the_log_before_the_checkpoint_is_durable_is_caught() {
    assert_caught(
        Bug::CutLogEarly,
        "the power-loss simulation",
        power_loss_check,
    );
}

#[test]
fn appending_after_a_torn_tail_is_caught() {
    assert_caught(
        Bug::AppendAfterTornTail,
        "torn-tail recovery",
        torn_tail_check,
    );
}

#[test]
fn trusting_a_declared_length_is_caught() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let clean = hostile_lengths_check(None)
        .unwrap_or_else(|why| panic!("hostile lengths fail without a planted bug: {why}"));
    match hostile_lengths_check(Some(Bug::TrustLength.name())) {
        Ok(summary) => panic!("planted bug trust-length: NOT CAUGHT ({summary})"),
        Err(why) => println!(
            "planted bug {:<24} CAUGHT by the hostile lengths (1 GiB address-space limit)\n    without it: {clean}\n    with it:    {why}",
            Bug::TrustLength.name()
        ),
    }
}
