//! A simulated disk for the crash and fault checkers (feature `sim`, tests only).
//!
//! It keeps, for every file, the bytes a power loss is sure to keep (*durable*) apart from
//! the writes since the last sync (*pending*), and for every directory the entries made
//! durable by the last directory sync apart from the creates, renames and unlinks since.
//! Reads see everything, as the page cache does. A crash ([`SimDisk::crash`]) builds the
//! disk a reboot would find:
//!
//! - each directory keeps its durable entries plus a prefix of its pending operations (a
//!   journaling file system commits metadata in order; a rename is one operation);
//! - each file keeps its durable bytes plus, chosen per file by the seed, none of its
//!   pending writes, all of them, a prefix whose last write is torn at any byte (zeros or
//!   garbage after the tear), or any subset of their 512-byte sectors, possibly with the
//!   file extended with zeros to the length it had.
//!
//! Writes of a mapped file are pending writes like any other, from the moment they are made:
//! a kernel may write a dirty page back at any time before the file's sync, so a crash may
//! keep any subset of them. Only `sync_data`/`sync_all` of the file make them durable.
//!
//! Faults: [`SimDisk::crash_at`] cuts the power at mutating operation N (that operation and
//! everything after it fail with EIO; the disk as it was is kept for [`SimDisk::crash`]);
//! [`SimDisk::fail_at`] fails operation N with EIO or ENOSPC, once or from then on (a failed
//! write leaves the sectors of its first half behind, as a short write can), or makes the
//! sync at N fail *and lose* every other pending write of the file, so that a later sync
//! "succeeds" without them (what Linux does after a failed fsync; the others may already
//! have reached the disk); [`SimDisk::flip_bit`] damages durable bytes.
//!
//! Mutating operations are counted (creates, writes, truncations, allocations, syncs,
//! renames, unlinks, directory creates and removals); reads and writes into a
//! mapping are not (a write into a mapping is a store to memory, not a system call).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::vfs::{DirEntry, LockGuard, NodeKind, OpenMode, Vfs, VfsFile, VfsMap, VfsView};

/// The granularity at which a crash keeps or drops parts of a pending write.
pub const SECTOR_BYTES: u64 = 512;
const PAGE_BYTES: u64 = 4096;
const ROOT: u64 = 0;

/// Sparse file contents: pages never written read as zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Data {
    len: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Data {
    fn read(&self, offset: u64, buf: &mut [u8]) -> usize {
        let end = offset.saturating_add(buf.len() as u64).min(self.len);
        let mut at = offset;
        while at < end {
            let page = at / PAGE_BYTES;
            let within = (at % PAGE_BYTES) as usize;
            let n = ((PAGE_BYTES - within as u64).min(end - at)) as usize;
            let dst = &mut buf[(at - offset) as usize..][..n];
            match self.pages.get(&page) {
                Some(bytes) => dst.copy_from_slice(&bytes[within..within + n]),
                None => dst.fill(0),
            }
            at += n as u64;
        }
        end.saturating_sub(offset) as usize
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let page = at / PAGE_BYTES;
            let within = (at % PAGE_BYTES) as usize;
            let n = rest.len().min(PAGE_BYTES as usize - within);
            let bytes = self
                .pages
                .entry(page)
                .or_insert_with(|| vec![0; PAGE_BYTES as usize].into_boxed_slice());
            bytes[within..within + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            at += n as u64;
        }
        self.len = self.len.max(offset + data.len() as u64);
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            let first_gone = len.div_ceil(PAGE_BYTES);
            self.pages.split_off(&first_gone);
            if !len.is_multiple_of(PAGE_BYTES) {
                if let Some(bytes) = self.pages.get_mut(&(len / PAGE_BYTES)) {
                    bytes[(len % PAGE_BYTES) as usize..].fill(0);
                }
            }
        }
        self.len = len;
    }

    fn apply(&mut self, op: &Pending) {
        match op {
            Pending::Write { at, bytes } => self.write(*at, bytes),
            Pending::SetLen(len) => self.set_len(*len),
        }
    }
}

/// A change to a file's bytes not yet synced.
#[derive(Debug, Clone)]
enum Pending {
    Write { at: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    /// What reads see.
    current: Data,
    /// What a crash keeps for sure.
    durable: Data,
    /// Changes since the last sync, in order.
    pending: Vec<Pending>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir(u64),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, Node),
    Unlink(String),
    Rename(String, String),
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<String, Node>) {
        match self {
            DirOp::Link(name, node) => {
                entries.insert(name.clone(), *node);
            }
            DirOp::Unlink(name) => {
                entries.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(node) = entries.remove(from) {
                    entries.insert(to.clone(), node);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Directory {
    current: BTreeMap<String, Node>,
    durable: BTreeMap<String, Node>,
    pending: Vec<DirOp>,
}

/// Everything on the disk: durable and pending state of every file and directory.
#[derive(Debug, Clone)]
struct Image {
    inodes: HashMap<u64, Inode>,
    dirs: HashMap<u64, Directory>,
    next_id: u64,
}

impl Default for Image {
    fn default() -> Self {
        Image {
            inodes: HashMap::new(),
            dirs: HashMap::from([(ROOT, Directory::default())]),
            next_id: ROOT + 1,
        }
    }
}

/// How a crash treats the writes and directory operations that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Only durable state survives.
    DurableOnly,
    /// Every pending write and directory operation survives (a clean shutdown of the OS).
    Everything,
    /// Per file and directory, a choice drawn from this seed (see the module comment).
    Seed(u64),
}

impl Image {
    fn after_crash(&self, damage: Damage) -> Image {
        let mut rng = fastrand::Rng::with_seed(match damage {
            Damage::Seed(seed) => seed,
            _ => 0,
        });
        // Sorted, so that a seed picks the same damage whatever the hash order.
        let mut dir_ids: Vec<u64> = self.dirs.keys().copied().collect();
        dir_ids.sort_unstable();
        let mut dirs = HashMap::new();
        for id in dir_ids {
            let dir = &self.dirs[&id];
            let kept = match damage {
                Damage::DurableOnly => 0,
                Damage::Everything => dir.pending.len(),
                Damage::Seed(_) => rng.usize(0..=dir.pending.len()),
            };
            let mut entries = dir.durable.clone();
            for op in &dir.pending[..kept] {
                op.apply(&mut entries);
            }
            let dir = Directory {
                current: entries.clone(),
                durable: entries,
                pending: Vec::new(),
            };
            dirs.insert(id, dir);
        }
        let mut inode_ids: Vec<u64> = self.inodes.keys().copied().collect();
        inode_ids.sort_unstable();
        let mut inodes = HashMap::new();
        for id in inode_ids {
            let inode = &self.inodes[&id];
            let data = match damage {
                Damage::DurableOnly => inode.durable.clone(),
                Damage::Everything => {
                    let mut data = inode.durable.clone();
                    inode.pending.iter().for_each(|op| data.apply(op));
                    data
                }
                Damage::Seed(_) => damage_file(inode, &mut rng),
            };
            let inode = Inode {
                current: data.clone(),
                durable: data,
                pending: Vec::new(),
            };
            inodes.insert(id, inode);
        }
        Image {
            inodes,
            dirs,
            next_id: self.next_id,
        }
    }
}

/// The bytes of one file after a crash, per a choice drawn from `rng`.
fn damage_file(inode: &Inode, rng: &mut fastrand::Rng) -> Data {
    let mut data = inode.durable.clone();
    if inode.pending.is_empty() {
        return data;
    }
    match rng.u8(0..4) {
        0 => {}
        1 => inode.pending.iter().for_each(|op| data.apply(op)),
        2 => {
            // A prefix, the last write of it torn.
            let kept = rng.usize(0..inode.pending.len());
            inode.pending[..kept].iter().for_each(|op| data.apply(op));
            match &inode.pending[kept] {
                Pending::Write { at, bytes } => {
                    let tear = rng.usize(0..=bytes.len());
                    let mut torn = bytes[..tear].to_vec();
                    let after = rng.usize(0..=bytes.len() - tear);
                    if rng.bool() {
                        torn.extend(std::iter::repeat_n(0, after));
                    } else {
                        torn.extend(std::iter::repeat_with(|| rng.u8(..)).take(after));
                    }
                    data.write(*at, &torn);
                }
                op @ Pending::SetLen(_) => {
                    if rng.bool() {
                        data.apply(op);
                    }
                }
            }
        }
        _ => {
            // Any subset of the sectors, in any order; maybe the length without the data.
            for op in &inode.pending {
                match op {
                    Pending::Write { at, bytes } => {
                        let end = at + bytes.len() as u64;
                        let mut from = *at;
                        while from < end {
                            let to = ((from / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
                            if rng.bool() {
                                data.write(from, &bytes[(from - at) as usize..(to - at) as usize]);
                            }
                            from = to;
                        }
                    }
                    Pending::SetLen(_) => {
                        if rng.bool() {
                            data.apply(op);
                        }
                    }
                }
            }
            if rng.bool() && inode.current.len > data.len {
                data.set_len(inode.current.len);
            }
        }
    }
    data
}

/// A rule of [`SimDisk::fail_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails with EIO and changes nothing.
    Eio,
    /// The operation fails with ENOSPC and changes nothing.
    Enospc,
    /// If the operation is a file sync: it fails with EIO and the file's pending writes are
    /// dropped, never to become durable, though reads still see them. A later sync then
    /// succeeds without them. Any other operation is unaffected.
    SyncLosesData,
}

#[derive(Debug, Clone, Copy)]
struct FaultRule {
    at: u64,
    fault: Fault,
    sticky: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpClass {
    Sync,
    Other,
}

#[derive(Debug, Default)]
struct State {
    image: Image,
    ops: u64,
    crash_at: Option<u64>,
    /// The disk as it was when the power was cut.
    at_crash: Option<Image>,
    faults: Vec<FaultRule>,
    locks: HashSet<PathBuf>,
    /// Print each mutating operation (`KEELDB_SIM_TRACE_OPS`), to debug a failing seed.
    trace: bool,
}

impl State {
    /// Counts a mutating operation and says what happens to it: `Ok(None)` to go ahead,
    /// `Ok(Some(fault))` for a fault the operation must act out, `Err` after a power cut.
    fn begin_raw(&mut self, class: OpClass) -> io::Result<Option<Fault>> {
        if self.at_crash.is_some() {
            return Err(power_lost());
        }
        self.ops += 1;
        if self.trace {
            eprintln!(
                "sim op {}: {class:?} {}",
                self.ops,
                std::backtrace::Backtrace::force_capture()
                    .to_string()
                    .lines()
                    .filter(|l| l.contains("keeldb_core::") && !l.contains("storage::sim"))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" <- ")
            );
        }
        if self.crash_at == Some(self.ops) {
            self.at_crash = Some(self.image.clone());
            return Err(power_lost());
        }
        let n = self.ops;
        let fault = self
            .faults
            .iter()
            .find(|r| r.at == n || (r.sticky && n > r.at))
            .map(|r| r.fault);
        match fault {
            Some(Fault::Eio | Fault::Enospc) => Ok(fault),
            Some(Fault::SyncLosesData) if class == OpClass::Sync => Ok(fault),
            _ => Ok(None),
        }
    }

    /// [`State::begin_raw`] for an operation that fails whole: an injected EIO or ENOSPC
    /// is its error, and it changes nothing.
    fn begin(&mut self, class: OpClass) -> io::Result<Option<Fault>> {
        match self.begin_raw(class)? {
            Some(fault @ (Fault::Eio | Fault::Enospc)) => Err(fault_error(fault)),
            other => Ok(other),
        }
    }

    fn check_alive(&self) -> io::Result<()> {
        match self.at_crash {
            Some(_) => Err(power_lost()),
            None => Ok(()),
        }
    }

    /// The directory `path` names.
    fn dir_id(&self, path: &Path) -> io::Result<u64> {
        let mut id = ROOT;
        for part in components(path)? {
            match self.image.dirs[&id].current.get(part) {
                Some(Node::Dir(child)) => id = *child,
                Some(Node::File(_)) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                None => return Err(not_found(path)),
            }
        }
        Ok(id)
    }

    /// The directory holding `path`, and `path`'s last component.
    fn parent<'p>(&self, path: &'p Path) -> io::Result<(u64, &'p str)> {
        let parts = components(path)?;
        let (name, _) = parts
            .split_last()
            .ok_or_else(|| invalid("the root has no parent"))?;
        let parent = path
            .parent()
            .ok_or_else(|| invalid("the root has no parent"))?;
        Ok((self.dir_id(parent)?, name))
    }

    fn lookup(&self, path: &Path) -> io::Result<Node> {
        if components(path)?.is_empty() {
            return Ok(Node::Dir(ROOT));
        }
        let (dir, name) = self.parent(path)?;
        self.image.dirs[&dir]
            .current
            .get(name)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn dir_op(&mut self, dir: u64, op: DirOp) {
        let directory = self
            .image
            .dirs
            .get_mut(&dir)
            .expect("directories are never freed");
        op.apply(&mut directory.current);
        directory.pending.push(op);
    }

    fn new_id(&mut self) -> u64 {
        let id = self.image.next_id;
        self.image.next_id += 1;
        id
    }

    fn inode(&mut self, id: u64) -> &mut Inode {
        self.image
            .inodes
            .get_mut(&id)
            .expect("inodes are never freed")
    }

    fn file_change(&mut self, id: u64, op: Pending) {
        let inode = self.inode(id);
        inode.current.apply(&op);
        inode.pending.push(op);
    }
}

fn components(path: &Path) -> io::Result<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                out.push(name.to_str().ok_or_else(|| invalid("non-UTF-8 name"))?)
            }
            _ => return Err(invalid("the simulated disk takes plain absolute paths")),
        }
    }
    Ok(out)
}

fn fault_error(fault: Fault) -> io::Error {
    match fault {
        Fault::Enospc => io::Error::from_raw_os_error(libc::ENOSPC),
        Fault::Eio | Fault::SyncLosesData => io::Error::from_raw_os_error(libc::EIO),
    }
}

fn power_lost() -> io::Error {
    io::Error::other("the simulated machine lost power")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_owned())
}

/// A simulated disk. Share it as `Arc<dyn Vfs>` with [`SimDisk::vfs`].
#[derive(Debug)]
pub struct SimDisk {
    me: Weak<SimDisk>,
    state: Mutex<State>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Arc<SimDisk> {
        SimDisk::with_image(Image::default())
    }

    fn with_image(image: Image) -> Arc<SimDisk> {
        Arc::new_cyclic(|me| SimDisk {
            me: me.clone(),
            state: Mutex::new(State {
                image,
                trace: std::env::var_os("KEELDB_SIM_TRACE_OPS").is_some(),
                ..State::default()
            }),
        })
    }

    /// This disk as a file system for [`crate::Db::open_in`].
    pub fn vfs(&self) -> Arc<dyn Vfs> {
        self.arc()
    }

    fn arc(&self) -> Arc<SimDisk> {
        self.me.upgrade().expect("a SimDisk lives in an Arc")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Cuts the power at mutating operation `n` (counted from 1 since the disk was made).
    pub fn crash_at(&self, n: u64) {
        self.lock().crash_at = Some(n);
    }

    /// Whether the power was cut.
    pub fn crashed(&self) -> bool {
        self.lock().at_crash.is_some()
    }

    /// Fails mutating operation `n` with `fault`; with `sticky`, every later one too.
    pub fn fail_at(&self, n: u64, fault: Fault, sticky: bool) {
        self.lock().faults.push(FaultRule {
            at: n,
            fault,
            sticky,
        });
    }

    /// The disk a reboot finds: after the power cut of [`SimDisk::crash_at`] if it
    /// happened, else as of now. This disk is left as it is, so one crash can be
    /// recovered under several damages.
    pub fn crash(&self, damage: Damage) -> Arc<SimDisk> {
        let state = self.lock();
        let image = state.at_crash.as_ref().unwrap_or(&state.image);
        SimDisk::with_image(image.after_crash(damage))
    }

    /// Flips `bit` (0..8) of byte `offset` of the file `path`, durably.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut state = self.lock();
        let Node::File(id) = state.lookup(path)? else {
            return Err(invalid("not a file"));
        };
        let inode = state.inode(id);
        let mut byte = [0u8];
        if inode.current.read(offset, &mut byte) != 1 {
            return Err(invalid("offset beyond the end of the file"));
        }
        byte[0] ^= 1 << (bit % 8);
        inode.current.write(offset, &byte);
        inode.durable.write(offset, &byte);
        Ok(())
    }

    /// The contents of every file under `dir`, by path, as reads see them.
    pub fn files(&self, dir: &Path) -> io::Result<BTreeMap<PathBuf, Vec<u8>>> {
        let state = self.lock();
        let mut out = BTreeMap::new();
        let mut todo = vec![(dir.to_owned(), state.dir_id(dir)?)];
        while let Some((path, id)) = todo.pop() {
            for (name, node) in &state.image.dirs[&id].current {
                match node {
                    Node::Dir(child) => todo.push((path.join(name), *child)),
                    Node::File(ino) => {
                        let data = &state.image.inodes[ino].current;
                        let mut bytes = vec![0; data.len as usize];
                        data.read(0, &mut bytes);
                        out.insert(path.join(name), bytes);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Vfs for SimDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut state = self.lock();
        state.check_alive()?;
        let existing = match state.lookup(path) {
            Ok(node) => Some(node),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let ino = match (mode, existing) {
            (_, Some(Node::Dir(_))) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            (OpenMode::Read | OpenMode::ReadWrite, Some(Node::File(ino))) => ino,
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists))
            }
            (OpenMode::Replace, Some(Node::File(ino))) => {
                state.begin(OpClass::Other)?;
                state.file_change(ino, Pending::SetLen(0));
                ino
            }
            (OpenMode::CreateNew | OpenMode::Replace, None) => {
                let (dir, name) = state.parent(path)?;
                let name = name.to_owned();
                state.begin(OpClass::Other)?;
                let ino = state.new_id();
                state.image.inodes.insert(ino, Inode::default());
                state.dir_op(dir, DirOp::Link(name, Node::File(ino)));
                ino
            }
        };
        Ok(Arc::new(SimFile {
            disk: self.arc(),
            ino,
            writable: mode != OpenMode::Read,
        }))
    }

    fn kind(&self, path: &Path) -> io::Result<NodeKind> {
        let state = self.lock();
        state.check_alive()?;
        Ok(match state.lookup(path)? {
            Node::File(_) => NodeKind::File,
            Node::Dir(_) => NodeKind::Dir,
        })
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let state = self.lock();
        state.check_alive()?;
        let id = state.dir_id(dir)?;
        Ok(state.image.dirs[&id]
            .current
            .iter()
            .map(|(name, node)| DirEntry {
                name: name.clone(),
                kind: match node {
                    Node::File(_) => NodeKind::File,
                    Node::Dir(_) => NodeKind::Dir,
                },
            })
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        let (dir, from_name) = state.parent(from)?;
        let (to_dir, to_name) = state.parent(to)?;
        if dir != to_dir {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        if !state.image.dirs[&dir].current.contains_key(from_name) {
            return Err(not_found(from));
        }
        if let Some(Node::Dir(_)) = state.image.dirs[&dir].current.get(to_name) {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        let op = DirOp::Rename(from_name.to_owned(), to_name.to_owned());
        state.begin(OpClass::Other)?;
        state.dir_op(dir, op);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        let Node::File(_) = state.lookup(path)? else {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        };
        let (dir, name) = state.parent(path)?;
        let name = name.to_owned();
        state.begin(OpClass::Other)?;
        state.dir_op(dir, DirOp::Unlink(name));
        Ok(())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        if state.lookup(path).is_ok() {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let (dir, name) = state.parent(path)?;
        let name = name.to_owned();
        state.begin(OpClass::Other)?;
        let id = state.new_id();
        state.image.dirs.insert(id, Directory::default());
        state.dir_op(dir, DirOp::Link(name, Node::Dir(id)));
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut at = PathBuf::from("/");
        for part in components(path)? {
            at.push(part);
            match self.kind(&at) {
                Ok(NodeKind::Dir) => {}
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_dir(&at)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        let Node::Dir(top) = state.lookup(path)? else {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        };
        let (parent, name) = state.parent(path)?;
        let name = name.to_owned();
        state.begin(OpClass::Other)?;
        // Each entry is unlinked in its own directory, children first, as rm -r does.
        let mut todo = vec![top];
        let mut order = Vec::new();
        while let Some(id) = todo.pop() {
            order.push(id);
            for node in state.image.dirs[&id].current.values() {
                if let Node::Dir(child) = node {
                    todo.push(*child);
                }
            }
        }
        for id in order.into_iter().rev() {
            let names: Vec<String> = state.image.dirs[&id].current.keys().cloned().collect();
            for entry in names {
                state.dir_op(id, DirOp::Unlink(entry));
            }
        }
        state.dir_op(parent, DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        let id = state.dir_id(dir)?;
        state.begin(OpClass::Sync)?;
        let directory = state.image.dirs.get_mut(&id).expect("resolved");
        directory.durable = directory.current.clone();
        directory.pending.clear();
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        if let Err(e) = self.kind(path) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
            self.open(path, OpenMode::CreateNew)?;
        }
        let mut state = self.lock();
        if !state.locks.insert(path.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            disk: self.arc(),
            path: path.to_owned(),
        })))
    }
}

#[derive(Debug)]
struct SimLock {
    disk: Arc<SimDisk>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.disk.lock().locks.remove(&self.path);
    }
}

#[derive(Debug)]
struct SimFile {
    disk: Arc<SimDisk>,
    ino: u64,
    writable: bool,
}

impl SimFile {
    fn check_writable(&self) -> io::Result<()> {
        match self.writable {
            true => Ok(()),
            false => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.disk.lock();
        let fault = state.begin(OpClass::Sync)?;
        let inode = state.inode(self.ino);
        let pending = std::mem::take(&mut inode.pending);
        if fault == Some(Fault::SyncLosesData) {
            // Some pages may have reached the disk before the error: every other change
            // stays pending (a later sync or a crash may keep it); the rest is lost.
            inode.pending = pending.into_iter().skip(1).step_by(2).collect();
            return Err(fault_error(Fault::SyncLosesData));
        }
        pending.iter().for_each(|op| inode.durable.apply(op));
        Ok(())
    }
}

impl VfsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.disk.lock();
        state.check_alive()?;
        Ok(state.inode(self.ino).current.read(offset, buf))
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut state = self.disk.lock();
        let fault = state.begin_raw(OpClass::Other)?;
        // A write failing with EIO or ENOSPC may have written part of its bytes first:
        // here the sectors of its first half.
        let written = match fault {
            Some(fault @ (Fault::Eio | Fault::Enospc)) => {
                let half_end = offset + buf.len() as u64 / 2;
                let cut = (half_end / SECTOR_BYTES * SECTOR_BYTES).max(offset) - offset;
                Err((cut as usize, fault_error(fault)))
            }
            _ => Ok(()),
        };
        let kept = match &written {
            Ok(()) => buf.len(),
            Err((cut, _)) => *cut,
        };
        if kept > 0 {
            state.file_change(
                self.ino,
                Pending::Write {
                    at: offset,
                    bytes: buf[..kept].to_vec(),
                },
            );
        }
        written.map_err(|(_, e)| e)
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.disk.lock();
        state.check_alive()?;
        Ok(state.inode(self.ino).current.len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut state = self.disk.lock();
        state.begin(OpClass::Other)?;
        state.file_change(self.ino, Pending::SetLen(len));
        Ok(())
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut state = self.disk.lock();
        state.begin(OpClass::Other)?;
        let end = offset.saturating_add(len);
        if end > state.inode(self.ino).current.len {
            state.file_change(self.ino, Pending::SetLen(end));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn start_writeback(&self, _offset: u64, _len: u64) -> io::Result<()> {
        // A hint: the disk model already lets any pending write reach the disk early.
        self.disk.lock().check_alive()
    }

    fn map_read(&self) -> io::Result<Box<dyn VfsView>> {
        let mut state = self.disk.lock();
        state.check_alive()?;
        let len = state.inode(self.ino).current.len;
        let mut bytes = vec![0u8; len as usize];
        let got = state.inode(self.ino).current.read(0, &mut bytes);
        bytes.truncate(got);
        Ok(Box::new(SimView(bytes)))
    }

    fn map_read_growing(&self, _reserve_len: u64) -> io::Result<Box<dyn VfsView>> {
        // A copy of the bytes written so far: later writes do not show in it, which the
        // trait allows (the reader falls back to `read_at` past its end), and which makes a
        // reader that kept a view across a cut and rewrite see stale bytes here.
        self.map_read()
    }

    fn map_mut(&self) -> io::Result<Box<dyn VfsMap>> {
        self.check_writable()?;
        let mut state = self.disk.lock();
        state.check_alive()?;
        let data = &state.inode(self.ino).current;
        // Zeroed memory from the allocator is untouched until written, so a large mostly
        // empty file costs little.
        let mut bytes = vec![0u8; data.len as usize];
        for (page, content) in &data.pages {
            let at = (page * PAGE_BYTES) as usize;
            let n = content.len().min(bytes.len().saturating_sub(at));
            bytes[at..at + n].copy_from_slice(&content[..n]);
        }
        Ok(Box::new(SimMap {
            disk: Arc::clone(&self.disk),
            ino: self.ino,
            bytes,
        }))
    }
}

/// A read-only mapping: a copy of the bytes when it was made.
#[derive(Debug)]
struct SimView(Vec<u8>);

impl VfsView for SimView {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A mapping: its own copy of the bytes, every write also handed to the disk as pending.
#[derive(Debug)]
struct SimMap {
    disk: Arc<SimDisk>,
    ino: u64,
    bytes: Vec<u8>,
}

impl VfsMap for SimMap {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.bytes[offset..offset + data.len()].copy_from_slice(data);
        let mut state = self.disk.lock();
        if state.check_alive().is_ok() {
            state.file_change(
                self.ino,
                Pending::Write {
                    at: offset as u64,
                    bytes: data.to_vec(),
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(disk: &SimDisk, path: &str, at: u64, bytes: &[u8]) -> Arc<dyn VfsFile> {
        let file = disk
            .open(Path::new(path), OpenMode::Replace)
            .or_else(|_| disk.open(Path::new(path), OpenMode::ReadWrite))
            .expect("open");
        file.write_all_at(bytes, at).expect("write");
        file
    }

    fn read(disk: &SimDisk, path: &str) -> Option<Vec<u8>> {
        let file = disk.open(Path::new(path), OpenMode::Read).ok()?;
        let mut buf = vec![0; file.len().expect("len") as usize];
        file.read_at(&mut buf, 0).expect("read");
        Some(buf)
    }

    #[test]
    fn only_synced_bytes_and_entries_are_sure_to_survive() {
        let disk = SimDisk::new();
        let f = write(&disk, "/a", 0, b"hello");
        assert_eq!(
            read(&disk.crash(Damage::DurableOnly), "/a"),
            None,
            "the create was not synced"
        );
        disk.sync_dir(Path::new("/")).expect("sync dir");
        assert_eq!(read(&disk.crash(Damage::DurableOnly), "/a"), Some(vec![]));
        f.sync_data().expect("sync");
        f.write_all_at(b"J", 0).expect("write");
        let after = disk.crash(Damage::DurableOnly);
        assert_eq!(read(&after, "/a").as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            read(&disk.crash(Damage::Everything), "/a").as_deref(),
            Some(&b"Jello"[..])
        );
    }

    #[test]
    fn a_failed_sync_that_loses_data_is_not_undone_by_the_next_one() {
        let disk = SimDisk::new();
        let f = write(&disk, "/a", 0, b"one");
        disk.sync_dir(Path::new("/")).expect("sync dir");
        f.sync_data().expect("sync");
        f.write_all_at(b"two", 0).expect("write");
        disk.fail_at(disk.ops() + 1, Fault::SyncLosesData, false);
        assert!(f.sync_data().is_err());
        assert!(f.sync_data().is_ok(), "the next sync 'succeeds'");
        assert_eq!(
            read(&disk, "/a").as_deref(),
            Some(&b"two"[..]),
            "reads see it"
        );
        let after = disk.crash(Damage::Everything);
        assert_eq!(read(&after, "/a").as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn seeded_damage_replays_exactly_and_covers_tears_and_subsets() {
        let disk = SimDisk::new();
        disk.sync_dir(Path::new("/")).expect("sync dir");
        let f = write(&disk, "/a", 0, &[1; 2048]);
        disk.sync_dir(Path::new("/")).expect("sync dir");
        f.sync_data().expect("sync");
        f.write_all_at(&[2; 2048], 0).expect("write");
        let mut outcomes = HashSet::new();
        for seed in 0..200 {
            let a = read(&disk.crash(Damage::Seed(seed)), "/a").expect("file");
            let b = read(&disk.crash(Damage::Seed(seed)), "/a").expect("file");
            assert_eq!(a, b, "seed {seed} replays");
            outcomes.insert(a);
        }
        assert!(outcomes.contains(&vec![1; 2048]));
        assert!(outcomes.contains(&vec![2; 2048]));
        let mixed = outcomes.iter().any(|o| o.contains(&1) && o.contains(&2));
        assert!(mixed, "some crash keeps part of the write");
        let garbage = outcomes
            .iter()
            .any(|o| o.iter().any(|b| ![1u8, 2].contains(b)));
        assert!(garbage, "some crash tears the write with zeros or garbage");
    }

    #[test]
    fn a_failed_write_leaves_the_sectors_of_its_first_half() {
        let disk = SimDisk::new();
        let f = write(&disk, "/a", 0, b"");
        disk.fail_at(disk.ops() + 1, Fault::Enospc, false);
        let err = f.write_all_at(&[9; 2048], 0).expect_err("ENOSPC");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(read(&disk, "/a"), Some(vec![9; 1024]));
    }

    #[test]
    fn power_cut_at_op_n_fails_everything_after_and_keeps_the_disk_as_it_was() {
        let disk = SimDisk::new();
        disk.crash_at(3);
        let f = write(&disk, "/a", 0, b"x"); // ops 1 (create) and 2 (write)
        assert!(f.sync_data().is_err(), "op 3 loses power");
        assert!(f.write_all_at(b"y", 0).is_err());
        assert!(disk.crashed());
        let after = disk.crash(Damage::Everything);
        assert_eq!(read(&after, "/a").as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn writes_through_a_mapping_are_pending_until_the_file_syncs() {
        let disk = SimDisk::new();
        let f = write(&disk, "/v", 0, &[0; 8192]);
        disk.sync_dir(Path::new("/")).expect("sync dir");
        f.sync_data().expect("sync");
        let mut map = f.map_mut().expect("map");
        map.write(4096, &[7; 4]).expect("write");
        assert_eq!(&read(&disk, "/v").expect("file")[4096..4100], &[7; 4]);
        let lost = read(&disk.crash(Damage::DurableOnly), "/v").expect("file");
        assert_eq!(&lost[4096..4100], &[0; 4]);
        let early = read(&disk.crash(Damage::Everything), "/v").expect("file");
        assert_eq!(&early[4096..4100], &[7; 4], "written back before the sync");
        f.sync_data().expect("sync");
        let kept = read(&disk.crash(Damage::DurableOnly), "/v").expect("file");
        assert_eq!(&kept[4096..4100], &[7; 4]);
    }
}
