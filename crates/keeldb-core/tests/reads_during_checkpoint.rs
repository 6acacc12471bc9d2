//! Reads go on while a checkpoint writes the indexes, even when the first cosine search
//! after open, which builds the inverse norms under the state's write lock, comes in
//! meanwhile: it waits for the checkpoint without making readers queue behind it.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keeldb_core::storage::vfs::{DirEntry, LockGuard, NodeKind, OpenMode, RealFs, Vfs, VfsFile};
use keeldb_core::{Db, DbOptions, Id, Metric, SearchRequest};

/// The real file system, except that once `armed`, renaming a file over `ids.idx` (a
/// checkpoint's step 2) reports on `entered` and waits for `release`.
#[derive(Debug)]
struct GatedFs {
    inner: Arc<dyn Vfs>,
    armed: AtomicBool,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Vfs for GatedFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        self.inner.open(path, mode)
    }
    fn kind(&self, path: &Path) -> io::Result<NodeKind> {
        self.inner.kind(path)
    }
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let index = to.file_name().is_some_and(|name| name == "ids.idx");
        if index && self.armed.swap(false, Ordering::SeqCst) {
            let _ = self.entered.lock().expect("lock").send(());
            let _ = self.release.lock().expect("lock").recv();
        }
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        self.inner.try_lock(path)
    }
}

#[test]
fn a_get_during_a_checkpoint_does_not_wait_behind_the_first_cosine_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let fs = Arc::new(GatedFs {
        inner: RealFs::shared(),
        armed: AtomicBool::new(false),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let db = Db::open_in(fs.clone(), dir.path(), DbOptions::default()).expect("open");
    let c = db
        .create_collection("c", 4, Metric::Cosine)
        .expect("create");
    let ids: Vec<Id> = (0..1_000u64).map(Id::Int).collect();
    let vectors: Vec<f32> = (0..4_000).map(|i| (i % 7) as f32 + 1.0).collect();
    c.upsert(&ids, &vectors, None).expect("upsert");

    // A checkpoint, stopped at its index rename (it holds the writer lock, and reads the
    // state to write the indexes).
    fs.armed.store(true, Ordering::SeqCst);
    let checkpoint = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || c.checkpoint())
    };
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the checkpoint reaches its rename");
    // The first cosine search: it has to build the inverse norms, and waits for the
    // checkpoint to do so.
    let search = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            let request = SearchRequest {
                k: 3,
                filter: None,
                include_vectors: false,
                include_payloads: false,
            };
            c.search(&[1.0, 2.0, 3.0, 4.0], &request)
        })
    };
    std::thread::sleep(Duration::from_millis(200)); // for the search to reach its lock
    let (got_tx, got) = mpsc::channel();
    let get = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            let _ = got_tx.send(c.get(&Id::Int(5)));
        })
    };
    // The read completes while the checkpoint is still held at its rename.
    let read = got.recv_timeout(Duration::from_secs(10));
    release.send(()).expect("release the checkpoint");
    let record = read
        .expect("a get during the checkpoint answered without waiting for it")
        .expect("get");
    assert!(record.is_some());
    checkpoint.join().expect("join").expect("checkpoint");
    let hits = search.join().expect("join").expect("search");
    assert_eq!(hits.len(), 3);
    get.join().expect("join");
    db.close().expect("close");
}
