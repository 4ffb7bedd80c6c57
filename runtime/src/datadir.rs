//! The data directory: one instance at a time, the code key, recovery at
//! start (in parallel, from hint files where it can), hint files written
//! after seals, and the rare repair after a disk-full failure. Blocking
//! `std::fs`, run before the cores start or on threads of its own, never
//! on a serving core.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use shorty_service::codes::{format_code, CodeKey, IdSpace, MAX_CODE_LEN};
use shorty_service::keydir::{Ident, KeyDir, Location, SameVersion, Target, TOMBSTONE};
use shorty_service::log::hint::{
    build_hint, hint_file_name, hint_reservation, HintEntry, HINT_HEADER_LEN,
};
use shorty_service::log::record::{decode_record, Decoded, Record, ALIAS_KEY, NO_ID};
use shorty_service::log::recovery::{
    recover_segment, HighWater, RecoveryError, RecoveryFiles, STATE_FILE,
};
use shorty_service::log::segments::{
    damaged_file_name, parse_hint_file_name, parse_segment_file_name, segment_file_name, FileIdx,
    SegmentTable,
};
use shorty_service::log::Repair;
use tempfile::NamedTempFile;

/// Name of the code key file in the data directory.
pub const KEY_FILE: &str = "code.key";

/// Name of the lock file: held (flock) for the life of the process.
pub const LOCK_FILE: &str = "LOCK";

/// Why a data directory cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataDirError {
    /// The directory cannot be created or is not a directory.
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the lock.
    InUse {
        /// The directory.
        path: PathBuf,
        /// The other process, as its lock file says.
        pid: String,
    },
    /// The code key cannot be read or created.
    Key {
        /// The key file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// Recovery refused.
    Recovery(RecoveryError),
    /// The high-water file is damaged: without it, ids and segment numbers
    /// of files moved aside could be handed out again.
    State {
        /// The file.
        path: PathBuf,
    },
    /// Two records hold the same code at the same version (a segment
    /// restored, or links imported, twice): which one is right is the
    /// operator's call, not a race between recovery threads. (Records of
    /// one key with different versions are an update history: the highest
    /// wins.)
    Duplicate {
        /// The code (or alias).
        code: String,
        /// The version both records carry.
        version: u64,
        /// The first place, `(file, record offset)`, in file order.
        first: (String, u32),
        /// The second place.
        second: (String, u32),
    },
    /// Another I/O failure.
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

impl std::fmt::Display for DataDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataDirError::Directory { path, reason } => {
                write!(f, "data directory {}: {reason}", path.display())
            }
            DataDirError::InUse { path, pid } => {
                write!(
                    f,
                    "data directory {} is in use by pid {pid}",
                    path.display()
                )
            }
            DataDirError::Key { path, source } => {
                write!(f, "code key {}: {source}", path.display())
            }
            DataDirError::Recovery(err) => write!(
                f,
                "recovery refused: {err} (the server will not start rather than lose \
                 acknowledged links: run `verify --data-dir`, restore the file from a backup \
                 or move it aside)"
            ),
            DataDirError::State { path } => write!(
                f,
                "{} is damaged: restore it from a backup (it records the ids and segment \
                 numbers ever handed out, so that none is handed out twice)",
                path.display()
            ),
            DataDirError::Duplicate {
                code,
                version,
                first,
                second,
            } => write!(
                f,
                "recovery refused: code {code} is held by two records of version {version}, {} \
                 at byte offset {} and {} at byte offset {} (a file restored or links imported \
                 twice): move aside the file that should not hold it",
                first.0,
                place(first.1),
                second.0,
                place(second.1)
            ),
            DataDirError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for DataDirError {}

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Held for the life of the process: the flock is released when the
    /// descriptor closes (also when the process is killed).
    _lock: File,
}

/// `true` when a process (a server, an offline merge, an import) holds
/// `dir`'s lock: asked through a read-only descriptor, so any reader may.
pub fn in_use(dir: &Path) -> bool {
    OpenOptions::new()
        .read(true)
        .open(dir.join(LOCK_FILE))
        .is_ok_and(|f| matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock)))
}

/// Leaves [`damaged_file_name`]`(number)` beside a segment recovery
/// refused; a failure is logged (the refusal is reported anyway).
fn mark_damaged(dir: &Path, number: u64) {
    let name = damaged_file_name(number);
    let text = format!(
        "recovery refused {}: while this file is here and that segment is not, \
         merges forget no deleted link (the segment may be moved back); \
         delete this file once the segment is given up for good\n",
        segment_file_name(number)
    );
    if let Err(err) = write_atomic(dir, &name, text.as_bytes()) {
        tracing::warn!(marker = %name, "marking a damaged segment: {err}");
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DataDir {
    /// Creates (if needed) and locks `path`. The lock is taken before
    /// anything else in the directory is read or created.
    ///
    /// # Errors
    /// [`DataDirError`] when it is not a usable directory or another
    /// process has it.
    pub fn open(path: &Path) -> Result<Self, DataDirError> {
        let dir_err = |reason: String| DataDirError::Directory {
            path: path.to_owned(),
            reason,
        };
        match fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                return Err(dir_err("exists and is not a directory".into()))
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(|e| dir_err(format!("cannot be created: {e}")))?
            }
            Err(err) => return Err(dir_err(err.to_string())),
        }
        // Absolute from here on: log lines then name real paths, and some
        // I/O APIs (glommio's) fail on relative ones.
        let path = fs::canonicalize(path).map_err(|e| dir_err(e.to_string()))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| dir_err(format!("cannot open its lock file: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(DataDirError::InUse {
                    path,
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_owned()
                    },
                });
            }
            Err(fs::TryLockError::Error(err)) => {
                return Err(dir_err(format!("cannot lock {LOCK_FILE}: {err}")))
            }
        }
        let _ = lock.set_len(0);
        let _ = lock.seek(SeekFrom::Start(0));
        let _ = writeln!(lock, "{}", std::process::id());
        Ok(Self { path, _lock: lock })
    }

    /// The directory (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the code key, creating it (randomly, durably) on first start.
    ///
    /// # Errors
    /// [`DataDirError::Key`].
    pub fn load_or_create_key(&self) -> Result<CodeKey, DataDirError> {
        let path = self.path.join(KEY_FILE);
        let key_err = |source| DataDirError::Key {
            path: path.clone(),
            source,
        };
        match read_key(&path) {
            Ok(key) => return Ok(key),
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(key_err(err)),
            Err(_) => {}
        }
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| key_err(io::Error::other(e)))?;
        // A temporary file no other process uses, written and synced whole,
        // then moved into place only if no key exists (`persist_noclobber`:
        // `renameat2(RENAME_NOREPLACE)`, or a hard link where the file
        // system lacks it): two first starts can never produce two keys,
        // and a crash never a half-written one. The temporary file is
        // removed whatever happens.
        let written = (|| {
            let mut file = temp_file_in(&self.path, KEY_FILE)?;
            file.write_all(&key)?;
            file.as_file().sync_all()?;
            match file.persist_noclobber(&path) {
                Ok(_) => sync_dir(&self.path),
                Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(err) => Err(err.error),
            }
        })();
        written.map_err(key_err)?;
        // Whoever moved theirs into place first, this is the key.
        read_key(&path).map_err(key_err)
    }
}

fn read_key(path: &Path) -> io::Result<CodeKey> {
    let bytes = fs::read(path)?;
    let key: [u8; 16] = bytes.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the key file must hold exactly 16 bytes",
        )
    })?;
    Ok(CodeKey(key))
}

/// [`RecoveryFiles`] over a real directory.
#[derive(Debug, Clone)]
pub struct StdFiles {
    dir: PathBuf,
}

impl StdFiles {
    /// Files in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }
}

impl RecoveryFiles for StdFiles {
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join(name))
    }

    fn read_tail(&mut self, name: &str, n: usize) -> io::Result<(u64, Vec<u8>)> {
        let file = File::open(self.dir.join(name))?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(n as u64);
        let mut tail = vec![0; (len - start) as usize];
        file.read_exact_at(&mut tail, start)?;
        Ok((len, tail))
    }

    fn read_if_exists(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn truncate_and_append(&mut self, name: &str, len: u64, tail: &[u8]) -> io::Result<()> {
        truncate_then_seal(&self.dir.join(name), len, tail)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => sync_dir(&self.dir),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.dir, name, bytes)
    }
}

/// Cuts `path` to `len`, syncs, then appends `tail` and syncs again: the
/// seal never reaches the disk before the bytes it vouches for.
fn truncate_then_seal(path: &Path, len: u64, tail: &[u8]) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_data()?;
    if !tail.is_empty() {
        file.write_all_at(tail, len)?;
        file.sync_data()?;
    }
    Ok(())
}

/// Writes `dir/name` through a temporary file, synced, renamed into place,
/// and the directory synced. The temporary file is removed on failure.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut file = temp_file_in(dir, name)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(dir.join(name)).map_err(|err| err.error)?;
    sync_dir(dir)
}

/// A new temporary file in `dir` for `name`: `name.XXXXXX.tmp`, a name no
/// other writer uses, created with the mode `File::create` gives (0o666
/// less the umask, not `tempfile`'s 0o600), deleted when dropped unless
/// persisted.
fn temp_file_in(dir: &Path, name: &str) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

/// Runs a [`Repair`] (after a disk-full failure).
///
/// # Errors
/// The file operation's error.
pub fn repair(repair: &Repair) -> io::Result<()> {
    let path = &repair.segment.path;
    if repair.seal.is_empty() {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        return path.parent().map_or(Ok(()), sync_dir);
    }
    truncate_then_seal(path, repair.truncate_to, &repair.seal)
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Links loaded.
    pub links: u64,
    /// Segment files recovered.
    pub segments: u64,
    /// Of them, loaded from hint files.
    pub from_hints: u64,
    /// The segments loaded from hints (not read at start: the scrub reads
    /// them afterwards).
    pub hinted: Vec<u64>,
    /// Of them, unsealed (an unclean stop) and sealed now.
    pub sealed_now: u64,
    /// Tails cut off, as `(file, from, to, why)`.
    pub cuts: Vec<(String, u64, u64, &'static str)>,
    /// Files removed because they held nothing acknowledged.
    pub removed: u64,
    /// Hint files whose segment is missing (moved aside or lost): not
    /// trusted as data, but their numbers and ids count for the
    /// high-water mark.
    pub orphaned_hints: Vec<u64>,
    /// The first id this run may hand out: past every id any earlier run
    /// may have handed out.
    pub next_id: u64,
    /// The high-water mark recorded in `STATE` for this run (its start
    /// plus a lease; see [`StateKeeper`]; less if the write failed, so the
    /// keeper writes it).
    pub high_water: HighWater,
    /// Time taken.
    pub elapsed: Duration,
}

/// Lists the segment numbers in `dir`, sorted.
///
/// # Errors
/// The directory cannot be listed.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    Ok(list_numbered(dir)?.0)
}

/// The numbers of hint files in `dir` whose segment is missing, sorted.
///
/// # Errors
/// The directory cannot be listed.
pub fn orphaned_hints(dir: &Path) -> io::Result<Vec<u64>> {
    let (logs, hints) = list_numbered(dir)?;
    Ok(hints
        .into_iter()
        .filter(|n| logs.binary_search(n).is_err())
        .collect())
}

/// The segment numbers and the hint numbers in `dir`, each sorted.
fn list_numbered(dir: &Path) -> io::Result<(Vec<u64>, Vec<u64>)> {
    let (mut logs, mut hints) = (Vec::new(), Vec::new());
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(n) = parse_segment_file_name(&name) {
            logs.push(n);
        } else if let Some(n) = parse_hint_file_name(&name) {
            hints.push(n);
        }
    }
    logs.sort_unstable();
    hints.sort_unstable();
    Ok((logs, hints))
}

/// Reads `STATE`: `None` when there is none (a new directory, or one
/// written before it existed).
///
/// # Errors
/// [`DataDirError::State`] when it is damaged, [`DataDirError::Io`] when it
/// cannot be read.
pub fn read_state(dir: &Path) -> Result<Option<HighWater>, DataDirError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => HighWater::decode(&bytes)
            .map(Some)
            .ok_or(DataDirError::State { path }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataDirError::Io { path, source }),
    }
}

/// Records `mark` in `STATE`, atomically and durably.
///
/// # Errors
/// The write failed.
pub fn write_state(dir: &Path, mark: HighWater) -> io::Result<()> {
    write_atomic(dir, STATE_FILE, &mark.encode())
}

/// The key directory's reservation for segments `numbers` of `dir`: the sum
/// of [`hint_reservation`] over them.
pub fn expected_links(dir: &Path, numbers: &[u64]) -> u64 {
    numbers
        .iter()
        .map(|&n| {
            let sized = || -> io::Result<u64> {
                let mut hint = File::open(dir.join(hint_file_name(n)))?;
                let hint_len = hint.metadata()?.len();
                let mut header = [0; HINT_HEADER_LEN];
                let read = hint.read(&mut header)?;
                let segment_len = fs::metadata(dir.join(segment_file_name(n)))?.len();
                Ok(hint_reservation(&header[..read], hint_len, segment_len))
            };
            sized().unwrap_or(0)
        })
        .fold(0u64, u64::saturating_add)
}

/// A record's offset in a refusal: a tombstone loaded from a hint has
/// none.
fn place(offset: u32) -> String {
    if offset == TOMBSTONE {
        "(a tombstone)".to_owned()
    } else {
        offset.to_string()
    }
}

/// A code found in a second record of the same version while loading.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Duplicate {
    /// The two places, `(segment number, offset)`, in order.
    first: (u64, u32),
    second: (u64, u32),
    key: u64,
    alias: Option<Box<str>>,
    version: u64,
    /// Both places as `(segment index, offset or TOMBSTONE, deleted at)`:
    /// the one loaded first, then the other.
    places: [(FileIdx, u32, u64); 2],
}

impl Duplicate {
    fn ident(&self) -> Ident<'_> {
        match &self.alias {
            Some(alias) if self.key == ALIAS_KEY => Ident::Alias(alias),
            _ => Ident::Key(self.key),
        }
    }
}

fn target_of((file, offset, deleted_at_ms): (FileIdx, u32, u64)) -> Target {
    if offset == TOMBSTONE {
        Target::Deleted {
            file,
            deleted_at_ms,
        }
    } else {
        Target::Live(Location { file, offset })
    }
}

/// `true` when both places of `dup` hold the same link: a merge's verbatim
/// copy beside the segment it was copied from (a merge's inputs restored
/// from a backup, say), or an import's copy of a link beside its original
/// (the README's remedy imports a damaged segment's links from an export
/// of a copy; when the segment is later put back, both hold them: review
/// 9b, the start refused). Links are compared by key, URL and options, all
/// a redirect reads, and by id unless one is an import's (which writes no
/// id); tombstones by their fields (key, version, time, alias: all a
/// tombstone holds).
fn same_link(
    dir: &Path,
    table: &SegmentTable,
    dup: &Duplicate,
    segments: &mut HashMap<u64, Vec<u8>>,
) -> bool {
    let [a, b] = dup.places;
    match (a.1 == TOMBSTONE, b.1 == TOMBSTONE) {
        (true, true) => return a.2 == b.2,
        (false, false) => {}
        _ => return false,
    }
    type Held = (u64, u64, Vec<u8>, Vec<u8>);
    let mut record = |(file, offset, _): (FileIdx, u32, u64)| -> Option<Held> {
        let number = table.get(file)?.number;
        let bytes = match segments.entry(number) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(std::fs::read(dir.join(segment_file_name(number))).ok()?)
            }
        };
        let at = bytes.get(offset as usize..)?;
        match decode_record(at) {
            Decoded::Record(Record::Link(link), _) => {
                Some((link.key, link.id, link.url.to_vec(), link.options.to_vec()))
            }
            _ => None,
        }
    };
    let (Some((key, id, url, options)), Some((key_b, id_b, url_b, options_b))) =
        (record(a), record(b))
    else {
        return false;
    };
    // The same id, or an import's copy (no id): two different ids for one
    // code are two different links (a wrong file restored), refused.
    (key, url, options) == (key_b, url_b, options_b) && (id == id_b || id == NO_ID || id_b == NO_ID)
}

/// Records of one key at one version met while loading segments into a
/// key directory: [`recover`] refuses the directory for them, and
/// `verify` reports them, through this one check.
#[derive(Debug, Default)]
pub struct DuplicateCheck {
    found: Mutex<Vec<Duplicate>>,
}

impl DuplicateCheck {
    /// Notes that `entry`, of segment `number` (`idx` in `table`), met
    /// `same` in the key directory (`KeyDir::recover` refused it).
    pub fn add(
        &self,
        table: &SegmentTable,
        number: u64,
        idx: FileIdx,
        entry: HintEntry,
        same: SameVersion,
    ) {
        // The other place: whichever record was loaded first. Both are
        // named, in file order, so the report does not depend on which
        // thread won.
        let (file, offset) = match same.existing {
            Target::Live(loc) => (loc.file, loc.offset),
            Target::Deleted { file, .. } => (file, TOMBSTONE),
        };
        let other = table.get(file).map(|s| (s.number, offset));
        let here = (number, entry.offset);
        let (first, second) = match other {
            Some(o) if o < here => (o, here),
            Some(o) => (here, o),
            None => (here, here),
        };
        let existing = match same.existing {
            Target::Live(loc) => (loc.file, loc.offset, 0),
            Target::Deleted {
                file,
                deleted_at_ms,
            } => (file, TOMBSTONE, deleted_at_ms),
        };
        self.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Duplicate {
                first,
                second,
                key: entry.key,
                alias: entry.alias,
                version: same.version,
                places: [existing, (idx, entry.offset, entry.deleted_at_ms)],
            });
    }

    /// Judges what [`add`](Self::add) noted once every segment of `dir` is
    /// loaded into `keydir`.
    ///
    /// # Errors
    /// [`DataDirError::Duplicate`]: two records of one key at one version
    /// that are not one record in two places (the first in file order).
    pub fn finish(
        self,
        dir: &Path,
        table: &SegmentTable,
        keydir: &KeyDir,
    ) -> Result<(), DataDirError> {
        let mut duplicates = self.found.into_inner().unwrap_or_else(|p| p.into_inner());
        // The same version twice with the same bytes is one record in two
        // places (a merge's copy and its source): not a conflict. The copy
        // in the higher-numbered segment is kept (a merge's output is
        // numbered past its inputs); the other is dead and the next merge
        // drops it. Different bytes at one version are refused below.
        let mut segments = HashMap::new();
        duplicates.retain(|dup| {
            if !same_link(dir, table, dup, &mut segments) {
                return true;
            }
            let number = |place: (FileIdx, u32, u64)| table.get(place.0).map_or(0, |s| s.number);
            let [loaded, other] = dup.places;
            if number(other) > number(loaded) {
                keydir.replace(dup.ident(), target_of(loaded), target_of(other));
            }
            tracing::warn!(
                first = %segment_file_name(dup.first.0),
                second = %segment_file_name(dup.second.0),
                "one link in two segments (a merge's copy and its source, or an import's copy of it): keeping the later"
            );
            false
        });
        match duplicates.into_iter().min() {
            None => Ok(()),
            Some(dup) => {
                let mut buf = [0; MAX_CODE_LEN];
                Err(DataDirError::Duplicate {
                    code: match &dup.alias {
                        Some(alias) if dup.key == ALIAS_KEY => alias.to_string(),
                        _ => format_code(dup.key, &mut buf).to_owned(),
                    },
                    version: dup.version,
                    first: (segment_file_name(dup.first.0), dup.first.1),
                    second: (segment_file_name(dup.second.0), dup.second.1),
                })
            }
        }
    }
}

/// Recovers every segment of `dir` into `keydir`, registering them in
/// `table`, on `threads` threads; records the high-water mark (`STATE`) and
/// numbers `table`'s new segments past it.
///
/// # Errors
/// [`DataDirError`] on I/O failure or a refusal.
pub fn recover(
    dir: &Path,
    table: &SegmentTable,
    keydir: &KeyDir,
    threads: usize,
) -> Result<RecoveryReport, DataDirError> {
    let started = Instant::now();
    let io_err = |path: PathBuf| move |source| DataDirError::Io { path, source };
    // A merge a stop interrupted is finished or undone first, so no link is
    // ever loaded from two places (see `shorty_service::log::merge`).
    crate::merge::settle(dir)
        .map_err(io_err(dir.join(shorty_service::log::merge::MANIFEST_FILE)))?;
    let (numbers, hints) = list_numbered(dir).map_err(io_err(dir.to_owned()))?;
    // Every id and segment number any earlier run may have handed out:
    // the recorded mark, every file's number, and the ids of hints whose
    // segment is gone (their links are not loaded, their codes are still
    // out there).
    let state = read_state(dir)?;
    let mut floor = state.unwrap_or_default();
    let mut orphaned_hints = Vec::new();
    for &n in &numbers {
        floor = floor.max(HighWater::of_segment(n, None));
    }
    for &n in &hints {
        if numbers.binary_search(&n).is_ok() {
            floor = floor.max(HighWater::of_segment(n, None));
            continue;
        }
        let path = dir.join(hint_file_name(n));
        let bytes = fs::read(&path).map_err(io_err(path))?;
        floor = floor.max(HighWater::of_hint(n, &bytes));
        tracing::warn!(
            hint = %hint_file_name(n),
            "a hint file without its segment (moved aside?): not loaded; its ids stay used"
        );
        orphaned_hints.push(n);
    }
    // Recorded before any file changes, so that even a refused start has
    // written down every number it saw (an operator may move one aside
    // next).
    // What `STATE` says now, for the state keeper: a write that fails (a
    // full disk) does not stop the start (redirects must go on), the
    // keeper retries it. No link can be made meanwhile anyway.
    let mut recorded = state.unwrap_or_default();
    if state != Some(floor) {
        match write_state(dir, floor) {
            Ok(()) => recorded = floor,
            Err(err) => tracing::warn!("recording the high-water mark in {STATE_FILE}: {err}"),
        }
    }
    // Size the key directory once, so loading never regrows a table; only
    // from counts the files' sizes confirm (see `hint_reservation`).
    keydir.reserve(usize::try_from(expected_links(dir, &numbers)).unwrap_or(usize::MAX));
    let mut work: Vec<(u64, u32)> = Vec::with_capacity(numbers.len());
    for &number in &numbers {
        let idx = table.register(number).ok_or_else(|| DataDirError::Io {
            path: dir.to_owned(),
            source: io::Error::other("too many segments"),
        })?;
        work.push((number, idx));
    }
    let next = AtomicU64::new(0);
    let report = Mutex::new(RecoveryReport {
        segments: numbers.len() as u64,
        orphaned_hints,
        ..RecoveryReport::default()
    });
    let high_water = Mutex::new(floor);
    let duplicates = DuplicateCheck::default();
    // Links made with an API key: indexed by owner once every segment is
    // loaded, if still the live version (`KeyDir::index_owned`).
    let owned: Mutex<Vec<HintEntry>> = Mutex::new(Vec::new());
    // Refusals by segment number: the lowest is reported, whichever
    // thread met it first.
    let failures: Mutex<Vec<(u64, RecoveryError)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, work.len().max(1)) {
            scope.spawn(|| {
                let mut files = StdFiles::new(dir);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&(number, idx)) = work.get(i) else {
                        break;
                    };
                    if failures.lock().is_ok_and(|f| !f.is_empty()) {
                        break;
                    }
                    let mut found = Vec::new();
                    let mut owned_here = Vec::new();
                    let result = recover_segment(&mut files, number, |entry| {
                        if entry.owner.is_some() && !entry.is_tombstone() {
                            owned_here.push(entry.clone());
                        }
                        // The highest version wins, whatever file or thread
                        // it came from (docs/round3-design.md §4).
                        let target = entry.target(idx);
                        if let Err(same) = keydir.recover(entry.ident(), target, entry.version) {
                            found.push((entry, same));
                        }
                    });
                    if !owned_here.is_empty() {
                        owned
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .append(&mut owned_here);
                    }
                    for (entry, same) in found {
                        duplicates.add(table, number, idx, entry, same);
                    }
                    match result {
                        Ok(outcome) => {
                            let name = segment_file_name(number);
                            if let Some(problem) = &outcome.hint_problem {
                                tracing::info!(segment = %name, "scanning the segment: {problem}");
                            }
                            if let Some((from, to, why)) = outcome.cut {
                                tracing::warn!(
                                    segment = %name,
                                    from, to,
                                    "cutting an unacknowledged tail: {why}"
                                );
                            }
                            {
                                let mut h = high_water.lock().unwrap_or_else(|p| p.into_inner());
                                *h = h.max(HighWater::of_segment(number, outcome.max_id));
                            }
                            let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                            r.links += outcome.links;
                            r.from_hints += u64::from(outcome.from_hint);
                            if outcome.from_hint {
                                r.hinted.push(number);
                            }
                            r.sealed_now += u64::from(outcome.sealed_now);
                            r.removed += u64::from(outcome.removed);
                            if let Some((from, to, why)) = outcome.cut {
                                r.cuts.push((name, from, to, why));
                            }
                        }
                        Err(err) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((number, err)),
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by_key(|(number, _)| *number);
    // Marked before the refusal: the operator may move the segment aside
    // next, and merges must then forget no tombstone until it is back or
    // given up (`damaged_file_name`).
    for (number, _) in &failures {
        mark_damaged(dir, *number);
    }
    if let Some((_, err)) = failures.into_iter().next() {
        return Err(DataDirError::Recovery(err));
    }
    duplicates.finish(dir, table, keydir)?;
    for entry in owned.into_inner().unwrap_or_else(|p| p.into_inner()) {
        if let Some(ownership) = entry.owner {
            keydir.index_owned(entry.ident(), entry.version, ownership);
        }
    }
    // Every segment here loaded: a marker beside one is stale (it was
    // repaired or put back). A marker whose segment is missing stays.
    for &n in &numbers {
        let marker = dir.join(damaged_file_name(n));
        if marker.exists() {
            match fs::remove_file(&marker) {
                Ok(()) => {
                    tracing::info!(marker = %marker.display(), "segment loads again: marker removed")
                }
                Err(err) => tracing::warn!(marker = %marker.display(), "removing: {err}"),
            }
        }
    }
    let begin = high_water.into_inner().unwrap_or_else(|p| p.into_inner());
    // This run hands out ids and numbers from `begin` on; the file says
    // `begin` plus a lease, which the state keeper extends as it is used.
    let leased = begin.leased();
    match write_state(dir, leased) {
        Ok(()) => recorded = leased,
        Err(err) => tracing::warn!("recording the high-water mark in {STATE_FILE}: {err}"),
    }
    table.advance_to(begin.next_segment);
    let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
    report.next_id = begin.next_id;
    report.high_water = recorded;
    report.elapsed = started.elapsed();
    release_recovery_memory();
    Ok(report)
}

/// Keeps `STATE` ahead of the ids and segment numbers a running server
/// hands out (run by the hint writer's thread): once half the lease
/// recovery recorded is used it records a new one, and after the cores
/// have stopped it records exactly what was used, so a clean restart skips
/// nothing.
#[derive(Debug)]
pub struct StateKeeper {
    dir: PathBuf,
    limit: HighWater,
    ids: Arc<IdSpace>,
    segments: Arc<SegmentTable>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
}

/// How often the state keeper looks: the lease (2^23 ids, 512 segments
/// until the next extension) cannot be used up this fast.
const STATE_KEEPER_INTERVAL: Duration = Duration::from_millis(50);

impl StateKeeper {
    /// A keeper for `dir`, whose `STATE` recovery set to `limit`.
    pub fn new(
        dir: &Path,
        limit: HighWater,
        ids: Arc<IdSpace>,
        segments: Arc<SegmentTable>,
    ) -> Self {
        Self {
            dir: dir.to_owned(),
            limit,
            ids,
            segments,
            failing: false,
        }
    }

    fn in_use(&self) -> HighWater {
        HighWater {
            next_id: self.ids.next_free(),
            next_segment: self.segments.next_number(),
        }
    }

    /// Extends the lease when half of it is used.
    pub fn keep(&mut self) {
        let in_use = self.in_use();
        if !self.limit.needs_extension(in_use) {
            return;
        }
        let limit = self.limit.max(in_use.leased());
        match write_state(&self.dir, limit) {
            Ok(()) => {
                self.limit = limit;
                self.failing = false;
            }
            Err(err) if !self.failing => {
                self.failing = true;
                tracing::error!("recording the high-water mark in {STATE_FILE}: {err}; retrying");
            }
            Err(_) => {}
        }
    }

    /// Records exactly what was handed out; call only once nothing hands
    /// out more (the cores have stopped).
    pub fn finish(&mut self) {
        if let Err(err) = write_state(&self.dir, self.in_use()) {
            tracing::error!("recording the high-water mark in {STATE_FILE}: {err}");
        }
    }
}

/// Gives the memory recovery read hint files and segments into back to the
/// operating system. glibc raises its mmap threshold after freeing a large
/// block, so later multi-megabyte reads come from the recovery threads'
/// arenas and stay there once freed (10 bytes per link at 2M links, more
/// than the key directory's own 15); trimming returns it.
fn release_recovery_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of glibc's heaps; it
    // takes no pointer and is safe to call at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Writes hint files for sealed segments, off the serving cores.
#[derive(Debug, Clone)]
pub struct HintSender(mpsc::Sender<Option<u64>>);

impl HintSender {
    /// Asks for segment `number`'s hint file.
    pub fn send(&self, number: u64) {
        let _ = self.0.send(Some(number));
    }

    /// Asks the writer to stop once what is queued is written. (An explicit
    /// message: a runtime may keep a core's tasks, and their senders,
    /// alive after the core has stopped.)
    pub fn finish(&self) {
        let _ = self.0.send(None);
    }
}

/// Starts the hint writer for `dir`, which also runs `keeper` (if any). It
/// exits on [`HintSender::finish`] (or once every sender is dropped) after
/// its queue is done, recording the exact high-water mark; join it before
/// the process exits, so a clean stop leaves every sealed segment with its
/// hint.
///
/// # Errors
/// The thread cannot be started.
pub fn spawn_hint_writer(
    dir: &Path,
    mut keeper: Option<StateKeeper>,
) -> io::Result<(HintSender, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Option<u64>>();
    let dir = dir.to_owned();
    let handle = std::thread::Builder::new()
        .name("shorty-hints".into())
        .spawn(move || {
            loop {
                let number = match rx.recv_timeout(STATE_KEEPER_INTERVAL) {
                    Ok(Some(number)) => number,
                    Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Some(keeper) = &mut keeper {
                            keeper.keep();
                        }
                        continue;
                    }
                };
                if let Some(keeper) = &mut keeper {
                    keeper.keep();
                }
                let name = shorty_service::log::segments::segment_file_name(number);
                let written = fs::read(dir.join(&name)).and_then(|bytes| {
                    let hint = build_hint(number, &bytes)
                        .ok_or_else(|| io::Error::other("the segment is not sealed and whole"))?;
                    write_atomic(&dir, &hint_file_name(number), &hint)
                });
                if let Err(err) = written {
                    // A missing hint costs a scan at the next start, no more.
                    tracing::warn!(segment = %name, "writing the hint file failed: {err}");
                }
            }
            if let Some(keeper) = &mut keeper {
                keeper.finish();
            }
        })?;
    Ok((HintSender(tx), handle))
}

/// Re-reads, after start and off the serving cores, every segment that was
/// loaded from its hint without being read, checking every record and the
/// seal's checksum over the whole segment. Startup trusts sealed segments
/// with intact hints (that is what makes it fast); this finds bit rot in
/// them soon after, naming file and offset, and counts damaged segments in
/// `damaged` (the `shorty_log_damaged_segments` metric). Reads of a damaged
/// record are answered 500 meanwhile, never with a wrong URL.
pub fn spawn_scrubber(dir: &Path, mut numbers: Vec<u64>, damaged: Arc<AtomicU64>) {
    numbers.sort_unstable();
    let dir = dir.to_owned();
    let _ = std::thread::Builder::new()
        .name("shorty-scrub".into())
        .spawn(move || {
            let started = Instant::now();
            for number in &numbers {
                let name = shorty_service::log::segments::segment_file_name(*number);
                let Ok(file) = File::open(dir.join(&name)) else {
                    continue;
                };
                if let Err(err) = scrub_sealed(file, *number) {
                    damaged.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        segment = %name,
                        "scrub: {err}; its links are answered 500; run `verify --data-dir` \
                         and restore the file from a backup"
                    );
                }
            }
            tracing::info!(
                segments = numbers.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "scrub done"
            );
        });
}

/// Checks a sealed segment record by record and its seal's checksum over
/// the whole ([`SealedCheck`](shorty_service::log::scan::SealedCheck)),
/// reading through a 1 MiB buffer: a segment can be 1 GiB, and the scrub
/// must not hold it in memory.
fn scrub_sealed(mut file: File, number: u64) -> Result<(), String> {
    let mut check = shorty_service::log::scan::SealedCheck::new(number);
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if check.feed(&buf[..n], n == 0).map_err(|e| e.to_string())? {
            return Ok(());
        }
        if n == 0 {
            return Err("the file ends before its seal".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shorty_service::log::hint::HINT_ENTRY_LEN;
    use shorty_service::log::record::{Keyed, LINK_OVERHEAD, NO_ID};
    use shorty_service::log::segments::encode_sealed_records;

    #[test]
    fn a_second_instance_is_refused_with_the_holder_s_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let err = DataDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is in use by pid"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        assert!(
            DataDir::open(dir.path()).is_ok(),
            "released with the process"
        );
    }

    #[test]
    fn a_file_is_not_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let err = DataDir::open(&file).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn the_key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let a = data.load_or_create_key().unwrap();
        let b = data.load_or_create_key().unwrap();
        assert_eq!(a, b);
        assert_ne!(a.0, [0; 16]);
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(
            data.load_or_create_key().is_err(),
            "a damaged key is an error"
        );
    }

    #[test]
    fn write_atomic_replaces_whole_files_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "STATE", b"first").unwrap();
        write_atomic(dir.path(), "STATE", b"second").unwrap();
        assert_eq!(fs::read(dir.path().join("STATE")).unwrap(), b"second");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["STATE"]);
        // The mode `File::create` gives, not tempfile's owner-only 0o600.
        let created = dir.path().join("created");
        File::create(&created).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("STATE")), mode(&created));
    }

    #[test]
    fn racing_first_starts_agree_on_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = Arc::new(dir.path().to_owned());
            // Two creators (the lock would normally prevent this; the key
            // is created exclusively regardless).
            let keys: Vec<CodeKey> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let data = DataDir {
                            path: (*path).clone(),
                            _lock: File::open(&*path).unwrap(),
                        };
                        data.load_or_create_key().unwrap()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            assert!(keys.windows(2).all(|w| w[0] == w[1]));
            let leftovers = fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".tmp")
                })
                .count();
            assert_eq!(leftovers, 0);
        }
    }

    /// Writes sealed segment `number` holding `links` (key, id) and its
    /// hint, as a clean stop leaves them.
    fn write_segment(dir: &Path, number: u64, links: &[(u64, u64)]) -> Vec<u8> {
        use shorty_service::log::record::Link;
        let urls: Vec<String> = links
            .iter()
            .map(|(k, _)| format!("https://e.com/{k}"))
            .collect();
        let records: Vec<Link<'_>> = links
            .iter()
            .zip(&urls)
            .map(|(&(key, id), url)| Link {
                key,
                id,
                url: url.as_bytes(),
                options: &[],
            })
            .collect();
        let bytes = shorty_service::log::segments::encode_sealed_segment(number, &[&records[..]]);
        fs::write(dir.join(segment_file_name(number)), &bytes).unwrap();
        let hint = build_hint(number, &bytes).unwrap();
        fs::write(dir.join(hint_file_name(number)), &hint).unwrap();
        bytes
    }

    #[test]
    fn owned_links_are_indexed_from_hints_and_from_scans_at_their_live_version() {
        use shorty_service::link::LinkMeta;
        use shorty_service::log::record::{Link, Tombstone};
        use shorty_service::owners::{Entry, Member};
        let dir = tempfile::tempdir().unwrap();
        let options = |key: u64, version: u64| {
            let meta = LinkMeta {
                owner_key_id: Some(7),
                created_at_ms: Some(1_000 + key),
                version,
                ..LinkMeta::default()
            };
            let mut bytes = Vec::new();
            meta.encode(&mut bytes);
            bytes
        };
        let first: Vec<Vec<u8>> = (10..20).map(|k| options(k, 0)).collect();
        let mut records: Vec<Keyed<'_>> = (10..20u64)
            .zip(&first)
            .map(|(key, o)| {
                Keyed::Link(Link {
                    key,
                    id: key,
                    url: b"https://e.com/owned",
                    options: o,
                })
            })
            .collect();
        // An anonymous link: never in the index.
        records.push(Keyed::Link(Link::plain(30, 30, b"https://e.com/anon")));
        let segment = encode_sealed_records(0, &[&records[..]]);
        fs::write(dir.path().join(segment_file_name(0)), &segment).unwrap();
        // Later: key 10 updated (same owner and creation time), key 11
        // deleted.
        let updated = options(10, 1);
        let later = [
            Keyed::Link(Link {
                key: 10,
                id: NO_ID,
                url: b"https://e.com/changed",
                options: &updated,
            }),
            Keyed::Tombstone(Tombstone {
                key: 11,
                version: 1,
                deleted_at_ms: 5_000,
                alias: None,
            }),
        ];
        let segment = encode_sealed_records(1, &[&later[..]]);
        fs::write(dir.path().join(segment_file_name(1)), &segment).unwrap();
        let expected: Vec<Entry> = (10..20u64)
            .rev()
            .filter(|&k| k != 11)
            .map(|k| Entry {
                created_at_ms: 1_000 + k,
                member: Member::Key(k),
            })
            .collect();
        let listed = |dir: &Path| {
            let table = SegmentTable::new(dir, 0);
            let keydir = KeyDir::new();
            let report = recover(dir, &table, &keydir, 2).unwrap();
            (
                keydir.owners().page(7, None, 100),
                keydir.owners().len(),
                report,
            )
        };
        // Scanned (no hints yet).
        let (page, len, report) = listed(dir.path());
        assert_eq!(report.from_hints, 0);
        assert_eq!((page, len), (expected.clone(), 9));
        // From hints alone: their extras carry owner and creation time.
        for n in 0..2 {
            let bytes = fs::read(dir.path().join(segment_file_name(n))).unwrap();
            let hint = build_hint(n, &bytes).unwrap();
            fs::write(dir.path().join(hint_file_name(n)), &hint).unwrap();
        }
        let (page, len, report) = listed(dir.path());
        assert_eq!(report.from_hints, 2);
        assert_eq!((page, len), (expected, 9));
    }

    fn recover_fresh(dir: &Path, threads: usize) -> Result<(RecoveryReport, u64), DataDirError> {
        let table = SegmentTable::new(dir, 0);
        let keydir = KeyDir::new();
        let report = recover(dir, &table, &keydir, threads)?;
        Ok((report, table.next_number()))
    }

    #[test]
    fn a_flipped_bit_in_a_hint_s_count_reserves_nothing_it_cannot_back() {
        let dir = tempfile::tempdir().unwrap();
        let links: Vec<(u64, u64)> = (0..50).map(|i| (1000 + i, i)).collect();
        let segment = write_segment(dir.path(), 0, &links);
        assert_eq!(
            expected_links(dir.path(), &[0]),
            50,
            "an intact hint sizes exactly"
        );
        let hint_path = dir.path().join(hint_file_name(0));
        let clean = fs::read(&hint_path).unwrap();
        let bound = segment.len() as u64 / LINK_OVERHEAD as u64;
        for byte in 36..44 {
            for bit in 0..8 {
                let mut bad = clean.clone();
                bad[byte] ^= 1 << bit;
                fs::write(&hint_path, &bad).unwrap();
                let expected = expected_links(dir.path(), &[0]);
                assert!(
                    expected <= bound,
                    "flip {byte}.{bit}: reserves {expected} links for a {}-byte segment",
                    segment.len()
                );
            }
        }
        // And recovery still loads every link (by scanning).
        fs::write(&hint_path, {
            let mut bad = clean.clone();
            bad[42] ^= 0x10;
            bad
        })
        .unwrap();
        let (report, _) = recover_fresh(dir.path(), 2).unwrap();
        assert_eq!(report.links, 50);
        // The sizing function alone: a count the lengths do not confirm is
        // not taken, and a huge hint cannot claim more than its segment.
        let mut header = clean[..HINT_HEADER_LEN].to_vec();
        header[36..44].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let huge_hint = (HINT_HEADER_LEN + 4) as u64 + (1u64 << 40) * HINT_ENTRY_LEN as u64;
        assert_eq!(
            hint_reservation(&header, huge_hint, segment.len() as u64),
            0
        );
        assert_eq!(hint_reservation(&header, 10, u64::MAX), 0);
    }

    #[test]
    fn moving_segments_aside_never_makes_ids_or_numbers_go_backwards() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 0, &[(10, 0), (11, 1)]);
        write_segment(dir.path(), 1, &[(12, 2), (13, 3)]);
        write_segment(dir.path(), 2, &[(14, 4), (15, 5)]);
        let (first, next_number) = recover_fresh(dir.path(), 2).unwrap();
        assert!(
            first.next_id >= 6 && next_number >= 3,
            "{first:?} {next_number}"
        );
        // The newest segment moved aside with its hint, then the oldest.
        let aside = tempfile::tempdir().unwrap();
        for n in [2, 0] {
            for name in [segment_file_name(n), hint_file_name(n)] {
                fs::rename(dir.path().join(&name), aside.path().join(&name)).unwrap();
            }
            let (report, number) = recover_fresh(dir.path(), 2).unwrap();
            assert!(report.next_id >= first.next_id, "{report:?}");
            assert!(
                number >= next_number,
                "segment numbers went back to {number}"
            );
        }
        // A directory from before `STATE` existed: an orphaned hint (its
        // segment moved aside) still counts, though it is not loaded.
        fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        fs::rename(
            aside.path().join(hint_file_name(2)),
            dir.path().join(hint_file_name(2)),
        )
        .unwrap();
        let (report, number) = recover_fresh(dir.path(), 2).unwrap();
        assert_eq!(
            report.links, 2,
            "only segment 1's links: the orphan is not data"
        );
        assert_eq!(report.orphaned_hints, [2]);
        assert!(report.next_id >= 6 && number >= 3, "{report:?} {number}");
    }

    #[test]
    fn a_damaged_state_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 0, &[(10, 0)]);
        recover_fresh(dir.path(), 1).unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = recover_fresh(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains(STATE_FILE) && err.contains("damaged"), "{err}");
    }

    /// Writes sealed segment `number` holding `records`, with its hint
    /// unless `hint` is false.
    fn write_records(dir: &Path, number: u64, records: &[Keyed<'_>], hint: bool) {
        let bytes = shorty_service::log::segments::encode_sealed_records(number, &[records]);
        fs::write(dir.join(segment_file_name(number)), &bytes).unwrap();
        if hint {
            let hint = build_hint(number, &bytes).unwrap();
            fs::write(dir.join(hint_file_name(number)), &hint).unwrap();
        }
    }

    fn versioned(version: u64) -> Vec<u8> {
        let meta = shorty_service::link::LinkMeta {
            version,
            ..Default::default()
        };
        let mut options = Vec::new();
        meta.encode(&mut options);
        options
    }

    /// Updates and deletes spread over files recover to the newest version
    /// of each key, whatever the thread count, from hints or from scans.
    #[test]
    fn the_highest_version_wins_whatever_the_file_and_thread() {
        use shorty_service::log::record::{Link, Tombstone};
        let v1 = versioned(1);
        let v2 = versioned(2);
        let mut alias_options = Vec::new();
        shorty_service::link::LinkMeta {
            version: 1,
            alias: Some("promo".into()),
            ..Default::default()
        }
        .encode(&mut alias_options);
        for hints in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            // Key 7: created (v0) in 0, updated to v2 in 1, a late v1 in 2
            // (overtaken). Key 8: created in 0, deleted (v1) in 2. The
            // alias: created in 1, deleted in 0 (files are not in time
            // order once a merge rewrites them).
            write_records(
                dir.path(),
                0,
                &[
                    Keyed::Link(Link::plain(7, 1, b"https://e.com/v0")),
                    Keyed::Link(Link::plain(8, 2, b"https://e.com/8")),
                    Keyed::Tombstone(Tombstone {
                        key: ALIAS_KEY,
                        version: 2,
                        deleted_at_ms: 99,
                        alias: Some(b"promo"),
                    }),
                ],
                hints,
            );
            write_records(
                dir.path(),
                1,
                &[
                    Keyed::Link(Link {
                        options: &v2,
                        ..Link::plain(7, NO_ID, b"https://e.com/v2")
                    }),
                    Keyed::Link(Link {
                        options: &alias_options,
                        ..Link::plain(ALIAS_KEY, NO_ID, b"https://e.com/a")
                    }),
                ],
                hints,
            );
            write_records(
                dir.path(),
                2,
                &[
                    Keyed::Link(Link {
                        options: &v1,
                        ..Link::plain(7, NO_ID, b"https://e.com/v1")
                    }),
                    Keyed::Tombstone(Tombstone {
                        key: 8,
                        version: 1,
                        deleted_at_ms: 5,
                        alias: None,
                    }),
                ],
                hints,
            );
            for threads in 1..=3 {
                let table = SegmentTable::new(dir.path(), 0);
                let keydir = KeyDir::new();
                recover(dir.path(), &table, &keydir, threads).unwrap();
                let at = keydir.get(7).unwrap();
                assert_eq!(table.get(at.file).unwrap().number, 1, "v2 wins");
                assert_eq!(keydir.get(8), None, "deleted");
                assert!(keydir.contains(8), "and never handed out again");
                match keydir.lookup(shorty_service::keydir::Ident::Alias("promo")) {
                    Some((Target::Deleted { deleted_at_ms, .. }, state)) => {
                        assert_eq!((deleted_at_ms, state.installed), (99, 2))
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    /// A merge's output and its input both on disk (the input restored
    /// from a backup after the merge): the same version with the same
    /// bytes twice is one record, loaded once, from the later segment;
    /// a third record of that version with other bytes is still refused.
    #[test]
    fn a_record_and_its_verbatim_merged_copy_load_once_from_the_copy() {
        use shorty_service::log::record::{Link, Tombstone};
        let v3 = versioned(3);
        let records = [
            Keyed::Link(Link {
                options: &v3,
                ..Link::plain(7, NO_ID, b"https://e.com/v3")
            }),
            Keyed::Tombstone(Tombstone {
                key: 8,
                version: 2,
                deleted_at_ms: 99,
                alias: None,
            }),
            Keyed::Tombstone(Tombstone {
                key: ALIAS_KEY,
                version: 4,
                deleted_at_ms: 5,
                alias: Some(b"promo"),
            }),
        ];
        for hints in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            write_records(dir.path(), 1, &records, hints);
            // The merge's output: the same records, verbatim, numbered past.
            write_records(dir.path(), 9, &records, hints);
            for threads in 1..=3 {
                let table = SegmentTable::new(dir.path(), 0);
                let keydir = KeyDir::new();
                recover(dir.path(), &table, &keydir, threads).unwrap();
                let number = |file| table.get(file).unwrap().number;
                assert_eq!(number(keydir.get(7).unwrap().file), 9, "the copy");
                for ident in [Ident::Key(8), Ident::Alias("promo")] {
                    match keydir.lookup(ident) {
                        Some((Target::Deleted { file, .. }, _)) => assert_eq!(number(file), 9),
                        other => panic!("{other:?}"),
                    }
                }
            }
            fs::write(dir.path().join(KEY_FILE), [9; 16]).unwrap();
            assert_eq!(
                crate::tools::verify(dir.path()),
                std::process::ExitCode::SUCCESS,
                "one record in two places is not a conflict for verify either"
            );
            // Another record of version 3 with other bytes: refused.
            write_records(
                dir.path(),
                10,
                &[Keyed::Link(Link {
                    options: &v3,
                    ..Link::plain(7, NO_ID, b"https://e.com/other")
                })],
                hints,
            );
            let err = recover_fresh(dir.path(), 2).unwrap_err();
            assert!(
                matches!(err, DataDirError::Duplicate { version: 3, .. }),
                "{err}"
            );
            assert_eq!(
                crate::tools::verify(dir.path()),
                std::process::ExitCode::FAILURE
            );
        }
    }

    #[test]
    fn equal_versions_of_one_key_are_refused_naming_both_places() {
        use shorty_service::log::record::Link;
        use std::process::ExitCode;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), [9; 16]).unwrap();
        let v3 = versioned(3);
        for n in 0..2 {
            write_records(
                dir.path(),
                n,
                &[Keyed::Link(Link {
                    options: &v3,
                    ..Link::plain(7, NO_ID, format!("https://e.com/{n}").as_bytes())
                })],
                true,
            );
            // `verify` runs the same check: clean with one record, not
            // with the second (it used to say clean).
            let expected = [ExitCode::SUCCESS, ExitCode::FAILURE][n as usize];
            assert_eq!(crate::tools::verify(dir.path()), expected, "{n}");
        }
        let err = recover_fresh(dir.path(), 2).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, DataDirError::Duplicate { version: 3, .. })
                && message.contains(&segment_file_name(0))
                && message.contains(&segment_file_name(1)),
            "{message}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_naming_both_places_whatever_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..6 {
            write_segment(dir.path(), n, &[(100 + n, n * 2), (200 + n, n * 2 + 1)]);
        }
        // Segment 4 restored over a copy of segment 1's links: the same
        // keys in two files.
        write_segment(dir.path(), 4, &[(101, 50), (201, 51)]);
        let mut messages = std::collections::BTreeSet::new();
        for round in 0..12 {
            let err = recover_fresh(dir.path(), 1 + round % 4).unwrap_err();
            assert!(matches!(err, DataDirError::Duplicate { .. }), "{err}");
            messages.insert(err.to_string());
        }
        assert_eq!(messages.len(), 1, "{messages:?}");
        let message = messages.pop_first().unwrap();
        assert!(
            message.contains(&segment_file_name(1)) && message.contains(&segment_file_name(4)),
            "{message}"
        );
    }

    #[test]
    fn the_state_keeper_stays_ahead_of_what_is_handed_out_and_records_it_exactly() {
        use shorty_service::codes::IdAllocator;
        use shorty_service::log::recovery::ID_LEASE;
        let dir = tempfile::tempdir().unwrap();
        let (report, _) = recover_fresh(dir.path(), 1).unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), Some(report.high_water));
        let ids = Arc::new(IdSpace::new(report.next_id));
        let table = Arc::new(SegmentTable::new(dir.path(), 0));
        table.advance_to(
            report.high_water.next_segment - shorty_service::log::recovery::SEGMENT_LEASE,
        );
        let mut keeper =
            StateKeeper::new(dir.path(), report.high_water, ids.clone(), table.clone());
        keeper.keep();
        assert_eq!(
            read_state(dir.path()).unwrap(),
            Some(report.high_water),
            "nothing used yet"
        );
        // Hand out more than half the lease (whole blocks at a time).
        let mut alloc = IdAllocator::new(ids.clone());
        let mut last = 0;
        while ids.next_free() < report.next_id + ID_LEASE / 2 + 1 {
            for _ in 0..1024 {
                last = alloc.next_id();
            }
        }
        keeper.keep();
        let state = read_state(dir.path()).unwrap().unwrap();
        assert!(state.next_id > last + ID_LEASE / 2, "{state:?}");
        for _ in 0..600 {
            table.create().unwrap();
        }
        keeper.keep();
        let state = read_state(dir.path()).unwrap().unwrap();
        assert!(state.next_segment > table.next_number(), "{state:?}");
        keeper.finish();
        assert_eq!(
            read_state(dir.path()).unwrap(),
            Some(HighWater {
                next_id: ids.next_free(),
                next_segment: table.next_number()
            })
        );
    }
}
