//! The data directory: one instance at a time, the code key, recovery at
//! start (in parallel, from hint files where it can), hint files written
//! after seals, and the rare repair after a disk-full failure. Blocking
//! `std::fs`, run before the cores start or on threads of its own, never
//! on a serving core.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use shorty_service::codes::CodeKey;
use shorty_service::keydir::{KeyDir, Location};
use shorty_service::log::hint::{build_hint, hint_file_name, hint_seal};
use shorty_service::log::recovery::{recover_segment, RecoveryError, RecoveryFiles};
use shorty_service::log::segments::{parse_segment_file_name, SegmentTable};
use shorty_service::log::Repair;

/// Name of the code key file in the data directory.
pub const KEY_FILE: &str = "code.key";

/// Name of the lock file: held (flock) for the life of the process.
pub const LOCK_FILE: &str = "LOCK";

/// Present once `import` has written links into the directory: their codes
/// were not made from this directory's ids, so the server checks each new
/// id's code against the key directory (see `LocalStore::has_imports`).
pub const IMPORTED_FILE: &str = "IMPORTED";

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
        // A temporary name no other process uses, written and synced whole,
        // then linked into place only if no key exists: two first starts
        // can never produce two keys, and a crash never a half-written one.
        let tmp = self.path.join(format!(
            "{KEY_FILE}.{}.{:016x}.tmp",
            std::process::id(),
            u64::from_le_bytes(key[..8].try_into().unwrap_or_default())
        ));
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(&key)?;
            file.sync_all()?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => sync_dir(&self.path),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(err) => Err(err),
            }
        })();
        let _ = fs::remove_file(&tmp);
        written.map_err(key_err)?;
        // Whoever linked first, this is the key.
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
/// and the directory synced.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
    /// Keys found twice (kept: the first).
    pub duplicates: u64,
    /// One past the largest id found.
    pub next_id: u64,
    /// One past the largest segment number found.
    pub next_segment: u64,
    /// Time taken.
    pub elapsed: Duration,
}

/// Lists the segment numbers in `dir`, sorted.
///
/// # Errors
/// The directory cannot be listed.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(n) = entry?
            .file_name()
            .to_str()
            .and_then(parse_segment_file_name)
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Recovers every segment of `dir` into `keydir`, registering them in
/// `table`, on `threads` threads.
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
    let numbers = list_segments(dir).map_err(|source| DataDirError::Io {
        path: dir.to_owned(),
        source,
    })?;
    // Size the key directory once from the hints' headers, so loading
    // never regrows a table.
    let expected: u64 = numbers
        .iter()
        .filter_map(|&n| {
            let mut header = vec![0; 64];
            let mut file = File::open(dir.join(hint_file_name(n))).ok()?;
            let read = file.read(&mut header).ok()?;
            header.truncate(read);
            // The checksum covers the whole file, so take the count only
            // as a sizing hint: the header's `links` field.
            header
                .get(36..44)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        })
        .sum();
    keydir.reserve(expected.min(1 << 33) as usize);
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
        next_segment: numbers.last().map_or(0, |n| n + 1),
        ..RecoveryReport::default()
    });
    let failure: Mutex<Option<DataDirError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, work.len().max(1)) {
            scope.spawn(|| {
                let mut files = StdFiles::new(dir);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&(number, idx)) = work.get(i) else {
                        break;
                    };
                    if failure.lock().is_ok_and(|f| f.is_some()) {
                        break;
                    }
                    let mut duplicates = 0;
                    let result = recover_segment(&mut files, number, |key, offset| {
                        if !keydir.insert(key, Location { file: idx, offset }) {
                            duplicates += 1;
                        }
                    });
                    match result {
                        Ok(outcome) => {
                            let name = shorty_service::log::segments::segment_file_name(number);
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
                            let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                            r.links += outcome.links;
                            r.from_hints += u64::from(outcome.from_hint);
                            if outcome.from_hint {
                                r.hinted.push(number);
                            }
                            r.sealed_now += u64::from(outcome.sealed_now);
                            r.removed += u64::from(outcome.removed);
                            r.duplicates += duplicates;
                            if let Some(id) = outcome.max_id {
                                r.next_id = r.next_id.max(id.saturating_add(1));
                            }
                            if let Some((from, to, why)) = outcome.cut {
                                r.cuts.push((name, from, to, why));
                            }
                        }
                        Err(err) => {
                            let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                            f.get_or_insert(DataDirError::Recovery(err));
                        }
                    }
                }
            });
        }
    });
    if let Some(err) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(err);
    }
    let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
    report.elapsed = started.elapsed();
    release_recovery_memory();
    if report.duplicates > 0 {
        tracing::warn!(
            duplicates = report.duplicates,
            "keys found in more than one record; kept the first"
        );
    }
    Ok(report)
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

/// Starts the hint writer for `dir`. It exits on [`HintSender::finish`]
/// (or once every sender is dropped) after its queue is done; join it
/// before the process exits, so a clean stop leaves every sealed segment
/// with its hint.
///
/// # Errors
/// The thread cannot be started.
pub fn spawn_hint_writer(dir: &Path) -> io::Result<(HintSender, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Option<u64>>();
    let dir = dir.to_owned();
    let handle = std::thread::Builder::new()
        .name("shorty-hints".into())
        .spawn(move || {
            for number in rx.iter().map_while(|n| n) {
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

/// Checks that an intact hint exists for `number` (for tests and verify).
pub fn has_valid_hint(dir: &Path, number: u64) -> bool {
    fs::read(dir.join(hint_file_name(number)))
        .ok()
        .is_some_and(|h| hint_seal(&h, number).is_some())
}

/// A shared handle to the [`KeyDir`] and [`SegmentTable`] of an open data
/// directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Code → record location.
    pub keydir: Arc<KeyDir>,
    /// The segments.
    pub segments: Arc<SegmentTable>,
    /// What recovery did.
    pub report: RecoveryReport,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
