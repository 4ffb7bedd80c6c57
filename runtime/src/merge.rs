//! The merge's I/O (`shorty_service::log::merge` decides; this does the
//! file work): one background thread, off the serving cores, one merge at a
//! time, its reads and writes paced to `--merge-rate`.
//!
//! **When.** Every `--merge-interval`, or at once on SIGUSR1 (a signal,
//! not an admin endpoint: the admin listener takes no request bodies and
//! no writes, and a signal needs no port, no authentication and no client;
//! `kill -USR1 PID` is what operators already do to log daemons). The
//! check reads every sealed segment's hint (12 bytes per link) and asks the
//! key directory which entries are live; segments whose dead share is above
//! `--merge-threshold` are merged, most dead bytes first, up to
//! [`MAX_INPUT_BYTES`] per merge, until none of those is left (one check
//! per round: what changes meanwhile waits for the next round).
//!
//! **Reads in flight.** After the key directory swap, a read may still
//! hold an input's [`FileIdx`](shorty_service::log::segments::FileIdx)
//! (it looked the key up just before). Every read's reply is bounded by
//! `--store-timeout` (then it is answered 503 and its result dropped), so
//! the inputs are removed only [`grace`] after the swap: every read that
//! can still be answered finds its file. A core's open handle of a removed
//! segment keeps its disk space until the core's handle cache evicts it.
//!
//! **Failures.** An error before the merge's commit point changes nothing
//! (the next check tries again). An error after it leaves the manifest: the
//! thread stops merging (the key directory may point at either copy), and
//! the next start settles it ([`finish_interrupted`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shorty_service::codes::{Codec, IdSpace};
use shorty_service::keydir::KeyDir;
use shorty_service::log::hint::{decode_hint, hint_file_name};
use shorty_service::log::merge::{
    finish_interrupted, plan, record_bytes, run_merge_forgetting, usage_forgetting, Forgetting,
    Interrupted, KeepTombstones, LifecycleForgetting, MergeError, MergeFiles, MergeReport, Usage,
    MANIFEST_FILE,
};
use shorty_service::log::record::SEAL_LEN;
use shorty_service::log::recovery::{seal_at_end, RecoveryFiles};
use shorty_service::log::segments::{segment_file_name, SegmentRef, SegmentTable};
use shorty_service::metrics::MergeMetrics;

use crate::datadir::StdFiles;

/// Input bytes one merge takes at most: bounds its time (and so how long
/// the old and new copies both take disk space) and its list of moved keys
/// (12 bytes each); it holds one input and one output segment in memory.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// How long after the key directory swap a read may still hold an input:
/// its reply's deadline, plus a margin for the read that was just being
/// issued.
pub fn grace(store_timeout: Duration) -> Duration {
    store_timeout + Duration::from_secs(1)
}

/// What lets the merge forget tombstones ([`LifecycleForgetting`]): the
/// code key, the id counter and `--alias-quarantine`. `None` in
/// [`MergeSettings`] keeps every tombstone.
#[derive(Debug, Clone)]
pub struct ForgetSource {
    /// The codes' permutation, to tell a code's id.
    pub codec: Codec,
    /// The id counter the cores count through.
    pub ids: Arc<IdSpace>,
    /// `--alias-quarantine`.
    pub quarantine: Duration,
}

impl ForgetSource {
    /// The rule for a merge starting now.
    fn rule(&self) -> LifecycleForgetting {
        LifecycleForgetting {
            codec: self.codec.clone(),
            id_floor: self.ids.floor(),
            now_ms: crate::keys::now_ms(),
            quarantine_ms: u64::try_from(self.quarantine.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The rule of a merge: forget what `source` allows, or nothing.
enum Rule {
    Keep(KeepTombstones),
    Forget(LifecycleForgetting),
}

impl Forgetting for Rule {
    fn may_forget(&self, entry: &shorty_service::log::hint::HintEntry) -> bool {
        match self {
            Rule::Keep(k) => k.may_forget(entry),
            Rule::Forget(f) => f.may_forget(entry),
        }
    }
}

/// The default `--merge-nice`: the lowest. CFS weighs a nice-19 thread at
/// 15 against a serving thread's 1024, so while the serving thread is
/// runnable the merge gets about 1.5 % of a shared core, and whatever the
/// serving thread leaves (it waits for its peers between requests). At
/// 10M links, with the core shared (README, "Merge"): the serving thread
/// waited for the CPU 4.5 % of a merge at nice 19 against 9.7 % at 10,
/// and reads ran at 0.95x and 0.85x of their rate before the merge (0.63x
/// at nice 0 at 2M links). An idle core is still the merge's whole.
pub const DEFAULT_NICE: i32 = 19;

/// Lowers the calling thread's CPU priority to `nice` and, with any
/// `nice` above 0, its disk I/O to the idle class ([`IOPRIO_IDLE`]).
/// Linux applies both per thread (given a thread id), so the serving
/// threads are untouched. A failure (a container that forbids it) is
/// logged and the merge runs as before.
pub fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    let tid = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::warn!("merge: cannot lower the thread's priority: {err}");
    }
    if let Err(err) = set_io_priority(tid.as_raw_nonzero().get(), IOPRIO_IDLE) {
        tracing::warn!("merge: cannot lower the thread's I/O priority: {err}");
    }
}

/// `ioprio_set`'s value for the idle class (`IOPRIO_CLASS_IDLE` = 3,
/// shifted by `IOPRIO_CLASS_SHIFT` = 13; the idle class has no levels):
/// the block layer's schedulers that know classes (mq-deadline, bfq)
/// serve the merge's reads and syncs only when no other request waits,
/// with an aging bound (mq-deadline: 10 s) so it is never starved for
/// good. By default a thread's I/O priority follows its nice value within
/// the best-effort class, which mq-deadline does not tell apart.
pub const IOPRIO_IDLE: i32 = 3 << 13;

/// `ioprio_set(IOPRIO_WHO_PROCESS, tid, value)`: neither libc nor rustix
/// wraps it, so through `syscall`.
fn set_io_priority(tid: i32, value: i32) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    // SAFETY: ioprio_set takes three integers and touches no memory of
    // ours; a bad argument is an error return.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            libc::c_long::from(tid),
            libc::c_long::from(value),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What the merge thread needs to know.
#[derive(Debug, Clone)]
pub struct MergeSettings {
    /// `--merge-threshold`: the dead share above which a segment is merged.
    pub threshold: f64,
    /// `--merge-rate`: bytes read plus written per second.
    pub rate: u64,
    /// `--merge-interval`; zero: only on a trigger.
    pub interval: Duration,
    /// `--segment-bytes`: the largest output.
    pub segment_bytes: u64,
    /// See [`grace`].
    pub grace: Duration,
    /// Tombstones the lifecycle no longer needs are dropped with this;
    /// `None`: every tombstone is carried forward.
    pub forget: Option<ForgetSource>,
    /// `--merge-nice` ([`lower_priority`]); the merge thread only.
    pub nice: i32,
}

/// [`MergeFiles`] over a real directory, with reads and writes paced to a
/// rate (bytes per second).
#[derive(Debug)]
pub struct PacedFiles {
    inner: StdFiles,
    dir: PathBuf,
    rate: u64,
    started: Instant,
    bytes: u64,
    /// Bytes read so far (`shorty_log_merge_read_bytes_total`).
    pub read: u64,
    /// [`READERS_FILE`], locked exclusively while the inputs are retired.
    readers: Option<File>,
    /// Retired inputs an export was reading, still open, to be emptied
    /// once no export reads ([`empty_unread`]).
    unemptied: Vec<File>,
}

/// The file an export holds a shared lock (flock) on while it reads the
/// segments, and a merge an exclusive one while it retires its inputs:
/// emptying an input under an export's open descriptor would make the
/// export read it as nothing (review 7: exports during merges missed
/// hundreds of links and exited 0). Not data; need not be backed up.
pub const READERS_FILE: &str = "READERS";

/// Opens (creating it) `dir`'s [`READERS_FILE`]. A server creates it at
/// start, so that a reader without write access finds it.
///
/// # Errors
/// The directory's.
pub fn readers_file(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(READERS_FILE))
}

/// What an export holds while it reads `dir`'s segments: a shared lock
/// on [`READERS_FILE`], taken through a read-only descriptor when the
/// reader may not write (another user, a read-only mount of a live
/// directory: review 8 found exports there took no lock and missed
/// links). `None` only when the file cannot be opened and no server holds
/// the directory (nothing merges it then).
///
/// # Errors
/// The lock cannot be taken while a server runs on `dir` (its merges
/// could empty the segments being read), or the lock call failed.
pub fn lock_for_reading(dir: &Path) -> io::Result<Option<File>> {
    let file = readers_file(dir).or_else(|_| File::open(dir.join(READERS_FILE)));
    match file {
        Ok(file) => {
            file.lock_shared()?;
            Ok(Some(file))
        }
        Err(err) if crate::datadir::in_use(dir) => Err(io::Error::new(
            err.kind(),
            format!(
                "{}: {err}: a server runs on this directory and its merges could remove \
                 segments while they are read; read as a user who may open that file",
                dir.join(READERS_FILE).display()
            ),
        )),
        Err(_) => Ok(None),
    }
}

/// Empties the retired inputs in `unemptied` once no export reads the
/// directory (the readers' lock is free), so their blocks come back
/// although the cores' cached descriptors keep them open.
pub fn empty_unread(dir: &Path, unemptied: &mut Vec<File>) {
    if unemptied.is_empty() {
        return;
    }
    let Ok(lock) = readers_file(dir) else {
        return;
    };
    if lock.try_lock().is_err() {
        return;
    }
    for file in unemptied.drain(..) {
        if let Err(err) = file.set_len(0) {
            tracing::warn!("merge: a retired segment could not be emptied: {err}");
        }
    }
}

/// Bytes moved between two checks of the pace.
const CHUNK: usize = 1 << 20;

impl PacedFiles {
    /// Files in `dir`, at most `rate` bytes per second.
    pub fn new(dir: &Path, rate: u64) -> Self {
        Self {
            inner: StdFiles::new(dir),
            dir: dir.to_owned(),
            rate: rate.max(1),
            started: Instant::now(),
            bytes: 0,
            read: 0,
            readers: None,
            unemptied: Vec::new(),
        }
    }

    /// Counts `n` bytes and sleeps until the average is back under the
    /// rate.
    fn pace(&mut self, n: usize) {
        self.bytes += n as u64;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

impl RecoveryFiles for PacedFiles {
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.dir.join(name))?;
        let mut bytes = Vec::with_capacity(file.metadata()?.len() as usize);
        let mut chunk = vec![0; CHUNK];
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                return Ok(bytes);
            }
            bytes.extend_from_slice(&chunk[..n]);
            self.read += n as u64;
            self.pace(n);
        }
    }
    fn read_tail(&mut self, name: &str, n: usize) -> io::Result<(u64, Vec<u8>)> {
        self.inner.read_tail(name, n)
    }
    fn read_if_exists(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.inner.read_if_exists(name)
    }
    fn truncate_and_append(&mut self, name: &str, len: u64, tail: &[u8]) -> io::Result<()> {
        self.inner.truncate_and_append(name, len, tail)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.pace(bytes.len());
        self.inner.write_atomic(name, bytes)
    }
}

impl MergeFiles for PacedFiles {
    fn create_synced(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        for chunk in bytes.chunks(CHUNK) {
            file.write_all(chunk)?;
            self.pace(chunk.len());
        }
        file.sync_all()
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let to_path = self.dir.join(to);
        if to_path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{to} exists"),
            ));
        }
        fs::rename(self.dir.join(from), to_path)?;
        File::open(&self.dir)?.sync_all()
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn shut_out_readers(&mut self) -> bool {
        let file = match readers_file(&self.dir) {
            Ok(file) => file,
            // No reader can open it either.
            Err(_) => return true,
        };
        match file.try_lock() {
            Ok(()) => {
                self.readers = Some(file);
                true
            }
            Err(_) => {
                tracing::info!(
                    "an export is reading: the merged segments are removed without emptying them"
                );
                false
            }
        }
    }

    fn let_readers_in(&mut self) {
        // Closing the descriptor releases the lock.
        self.readers = None;
    }

    fn empty_later(&mut self, name: &str) {
        match OpenOptions::new().write(true).open(self.dir.join(name)) {
            Ok(file) => self.unemptied.push(file),
            Err(err) => tracing::warn!(name, "merge: a retired segment stays whole: {err}"),
        }
    }
}

/// Settles a merge a crash interrupted, before recovery lists the
/// segments (see [`finish_interrupted`]).
///
/// # Errors
/// A file operation failed or the manifest is damaged.
pub fn settle(dir: &Path) -> io::Result<Interrupted> {
    let done = finish_interrupted(&mut PacedFiles::new(dir, u64::MAX))?;
    if let Some(m) = &done.rolled_forward {
        tracing::warn!(
            inputs = ?m.inputs,
            outputs = ?m.outputs,
            "finished a merge a stop interrupted: removed the segments it had merged"
        );
    }
    if let Some(m) = &done.rolled_back {
        tracing::warn!(
            inputs = ?m.inputs,
            outputs = ?m.outputs,
            "undid a merge whose output is missing: kept the segments it merged"
        );
    }
    for name in &done.discarded {
        tracing::info!(file = %name, "removed an unfinished merge output");
    }
    Ok(done)
}

/// Per sealed segment, the bytes of its records ([`record_bytes`]): read
/// once per segment (a sealed segment never changes), by number.
pub type RecordBytes = HashMap<u64, u64>;

/// The usage of every sealed, hinted segment of `table` still on disk,
/// read through `files` (paced). A segment not in `known` yet is read
/// whole once.
pub fn usages(
    files: &mut PacedFiles,
    table: &SegmentTable,
    keydir: &KeyDir,
    known: &mut RecordBytes,
    forgetting: &impl Forgetting,
) -> Vec<(SegmentRef, Usage)> {
    let found: Vec<_> = (0..table.len())
        .filter_map(|i| table.get(i as u32))
        .filter_map(|segment| {
            let name = segment_file_name(segment.number);
            // Unsealed (being written), gone (merged) or unreadable: skip.
            let (len, tail) = files.read_tail(&name, SEAL_LEN).ok()?;
            let seal = seal_at_end(len, &tail)?;
            // Paced too: 12 bytes a link, every check.
            let hint = files.read(&hint_file_name(segment.number)).ok()?;
            let entries = decode_hint(&hint, segment.number, &seal).ok()?;
            let records = match known.get(&segment.number) {
                Some(&n) => n,
                None => {
                    let n = record_bytes(&files.read(&name).ok()?, segment.number)?;
                    *known.entry(segment.number).or_default() = n;
                    n
                }
            };
            let usage = usage_forgetting(
                segment.number,
                segment.idx,
                len,
                &seal,
                records,
                entries,
                keydir,
                forgetting,
            );
            Some((segment, usage))
        })
        .collect();
    known.retain(|n, _| found.iter().any(|(s, _)| s.number == *n));
    found
}

/// What merges work with: the directory, the key directory, the settings,
/// the metrics they update, and what they carry from one merge to the
/// next: the record bytes of the segments checked so far and the retired
/// inputs left to empty. The merge thread keeps one for its life; the
/// offline tool and the tests make one per run.
pub struct Merger<'a> {
    table: &'a SegmentTable,
    keydir: &'a KeyDir,
    settings: &'a MergeSettings,
    metrics: &'a MergeMetrics,
    /// The record bytes of every sealed segment checked so far.
    known: RecordBytes,
    /// Retired inputs left whole while an export reads them.
    unemptied: Vec<File>,
}

impl<'a> Merger<'a> {
    /// A merger that knows no segment yet.
    pub fn new(
        table: &'a SegmentTable,
        keydir: &'a KeyDir,
        settings: &'a MergeSettings,
        metrics: &'a MergeMetrics,
    ) -> Self {
        Self {
            table,
            keydir,
            settings,
            metrics,
            known: RecordBytes::new(),
            unemptied: Vec::new(),
        }
    }

    /// Runs one merge if any segment is over the threshold; `Ok(None)` when
    /// none is. Updates `metrics`.
    ///
    /// # Errors
    /// [`MergeError`].
    pub fn merge_once(&mut self) -> Result<Option<MergeReport>, MergeError> {
        let mut first = None;
        let round = Round {
            max_input: MAX_INPUT_BYTES,
            max_merges: 1,
        };
        merge_round(self, round, |report, _| first = Some(report))?;
        Ok(first)
    }
}

/// How much one round ([`merge_round`]) may do.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Input bytes per merge ([`MAX_INPUT_BYTES`]).
    max_input: u64,
    /// Merges in the round.
    max_merges: usize,
}

impl Round {
    /// Everything over the threshold, [`MAX_INPUT_BYTES`] per merge.
    const WHOLE: Self = Self {
        max_input: MAX_INPUT_BYTES,
        max_merges: usize::MAX,
    };
}

/// Rounds of merges ([`merge_round`]) one trigger runs at most: another
/// round follows only when a merge kept tombstones it counted as dead and a
/// later merge of the same round gave something back (it may have dropped
/// their older records), so this only bounds a pathological case.
const MAX_ROUNDS: usize = 4;

/// Rounds of merges ([`merge_round`]): every sealed segment's usage is read
/// once per round, then what is over the threshold is merged, most dead bytes first,
/// `max_input` bytes per merge, until nothing planned is left, handing
/// `each` every merge's report and time.
///
/// The usages are not read again between a round's merges (at 10M links
/// that read took seconds of CPU after every merge, beside the serving
/// cores): a segment not merged yet can only have lost live records since
/// (writes and deletes supersede them), so its planned dead bytes are a
/// lower bound, and the next round sees the rest. A merge's outputs are
/// fully live and enter `known` from the merge itself, so no round reads
/// them whole to learn their record bytes. One exception asks for another
/// round at once: a merge that kept tombstones the rule would forget (an
/// older record of their key was in a segment outside it) followed by a
/// merge that gave something back (perhaps those older records); review 10
/// found one offline `merge` giving back less than two without it. The merge thread and the
/// offline `merge` tool both run it.
fn merge_rounds(
    with: &mut Merger<'_>,
    round: Round,
    mut each: impl FnMut(MergeReport, Duration),
) -> Result<(), MergeError> {
    let mut merges = 0;
    for _ in 0..MAX_ROUNDS {
        // A merge kept tombstones; a merge after it gave something back.
        let mut kept = false;
        let mut freed_after = false;
        let budget = round.max_merges - merges;
        merges += merge_round(
            with,
            Round {
                max_merges: budget,
                ..round
            },
            |report, elapsed| {
                freed_after |= kept && (report.reclaimed() > 0 || report.forgotten > 0);
                kept |= report.tombstones_kept > 0;
                each(report, elapsed);
            },
        )?;
        // Review 10b: a round whose only merge kept tombstones (their older
        // records in a segment below the threshold) ran a second round that
        // merged its own output again for nothing, on every trigger.
        if !freed_after || merges >= round.max_merges {
            break;
        }
    }
    Ok(())
}

/// One round of [`merge_rounds`]: one check of every segment's usage,
/// then the merges it planned; returns how many it ran.
fn merge_round(
    with: &mut Merger<'_>,
    round: Round,
    mut each: impl FnMut(MergeReport, Duration),
) -> Result<usize, MergeError> {
    let Merger {
        table,
        keydir,
        settings,
        metrics,
        ref mut known,
        ref mut unemptied,
    } = *with;
    let rule = match &settings.forget {
        Some(source) => Rule::Forget(source.rule()),
        None => Rule::Keep(KeepTombstones),
    };
    let mut files = PacedFiles::new(table.dir(), settings.rate);
    let mut left: Vec<Usage> = usages(&mut files, table, keydir, known, &rule)
        .into_iter()
        .map(|(_, u)| u)
        .collect();
    metrics.read_bytes.fetch_add(files.read, Ordering::Relaxed);
    let mut dead: u64 = left.iter().map(Usage::dead).sum();
    metrics.dead_bytes.store(dead, Ordering::Relaxed);
    let mut merges = 0;
    while merges < round.max_merges {
        let picked = plan(&left, settings.threshold, round.max_input);
        if picked.is_empty() {
            break;
        }
        left.retain(|u| !picked.iter().any(|p| p.number == u.number));
        let started = Instant::now();
        let inputs: Vec<SegmentRef> = picked.iter().filter_map(|u| table.get(u.idx)).collect();
        let mut files = PacedFiles::new(table.dir(), settings.rate);
        let grace = settings.grace;
        let report = run_merge_forgetting(
            &mut files,
            table,
            keydir,
            &rule,
            &inputs,
            settings.segment_bytes,
            || std::thread::sleep(grace),
        );
        unemptied.append(&mut files.unemptied);
        metrics.read_bytes.fetch_add(files.read, Ordering::Relaxed);
        let report = report?;
        merges += 1;
        metrics.merges.fetch_add(1, Ordering::Relaxed);
        metrics
            .reclaimed_bytes
            .fetch_add(report.reclaimed(), Ordering::Relaxed);
        // What the next check will count: the inputs' dead bytes are gone,
        // except the tombstones the merge had to carry forward (review 10:
        // the gauge read low by exactly their bytes).
        dead = dead.saturating_sub(picked.iter().map(Usage::dead).sum())
            + report.tombstones_kept_bytes;
        metrics.dead_bytes.store(dead, Ordering::Relaxed);
        for input in &report.inputs {
            known.remove(input);
        }
        known.extend(
            report
                .outputs
                .iter()
                .copied()
                .zip(report.output_records.iter().copied()),
        );
        each(report, started.elapsed());
    }
    Ok(merges)
}

fn log_report(report: &MergeReport, elapsed: Duration) {
    tracing::info!(
        inputs = ?report.inputs,
        outputs = ?report.outputs,
        bytes_before = report.bytes_before,
        bytes_after = report.bytes_after,
        moved = report.moved,
        lost_races = report.lost_races,
        tombstones_forgotten = report.forgotten,
        tombstones_kept = report.tombstones_kept,
        elapsed_ms = elapsed.as_millis() as u64,
        "merged"
    );
}

/// Starts the merge thread. It checks every `settings.interval` (if not
/// zero) and whenever `trigger` is set (SIGUSR1), and merges until nothing
/// is over the threshold. It runs for the life of the process: a merge cut
/// short by the exit is settled at the next start.
///
/// # Errors
/// The thread cannot be started.
pub fn spawn_merger(
    table: Arc<SegmentTable>,
    keydir: Arc<KeyDir>,
    settings: MergeSettings,
    metrics: Arc<MergeMetrics>,
    trigger: Arc<AtomicBool>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("shorty-merge".into())
        .spawn(move || {
            lower_priority(settings.nice);
            let mut last = Instant::now();
            let mut with = Merger::new(&table, &keydir, &settings, &metrics);
            loop {
                std::thread::sleep(Duration::from_millis(100));
                empty_unread(table.dir(), &mut with.unemptied);
                let due = !settings.interval.is_zero() && last.elapsed() >= settings.interval;
                if !trigger.swap(false, Ordering::Relaxed) && !due {
                    continue;
                }
                last = Instant::now();
                let merged = merge_rounds(&mut with, Round::WHOLE, |report, elapsed| {
                    log_report(&report, elapsed);
                });
                if let Err(err) = merged {
                    if table.dir().join(MANIFEST_FILE).exists() {
                        tracing::error!(
                            "merge: {err}; merging stops until the next start, which finishes \
                             or undoes it"
                        );
                        return;
                    }
                    tracing::warn!("merge: {err}; nothing changed, tried again later");
                }
            }
        })
}

/// `merge`: merges a stopped server's directory until no segment is over
/// `threshold`, forgetting the tombstones a running server's merge would
/// (`quarantine`: its `--alias-quarantine`); prints what it did. Exit 0
/// on success.
pub fn offline(
    dir: &Path,
    threshold: f64,
    rate: u64,
    quarantine: Duration,
) -> std::process::ExitCode {
    let run = || -> Result<Vec<(MergeReport, Duration)>, String> {
        let data = crate::datadir::DataDir::open(dir).map_err(|e| e.to_string())?;
        let table = SegmentTable::new(data.path(), 0);
        let keydir = KeyDir::new();
        settle(data.path()).map_err(|e| e.to_string())?;
        let recovered =
            crate::datadir::recover(data.path(), &table, &keydir, 2).map_err(|e| e.to_string())?;
        // The running server's rule: codes' tombstones below the id
        // floor, aliases' after `--alias-quarantine` (the same flag and
        // environment variable). It once kept every alias's, so an
        // offline merge gave nothing back for them.
        let forget = if data.path().join(crate::datadir::KEY_FILE).exists() {
            let key = data.load_or_create_key().map_err(|e| e.to_string())?;
            Some(ForgetSource {
                codec: Codec::new(&key),
                ids: Arc::new(IdSpace::new(recovered.next_id)),
                quarantine,
            })
        } else {
            None
        };
        let settings = MergeSettings {
            threshold,
            rate,
            interval: Duration::ZERO,
            segment_bytes: 64 << 20,
            grace: Duration::ZERO,
            forget,
            nice: 0,
        };
        let metrics = MergeMetrics::default();
        let mut reports = Vec::new();
        let mut with = Merger::new(&table, &keydir, &settings, &metrics);
        merge_rounds(&mut with, Round::WHOLE, |report, elapsed| {
            reports.push((report, elapsed));
        })
        .map_err(|e| e.to_string())?;
        Ok(reports)
    };
    match run() {
        Ok(reports) => {
            for (r, elapsed) in &reports {
                println!(
                    "merged {:?} into {:?}: {} -> {} bytes, {} links moved, {} tombstones \
                     forgotten, {:.2} s, {:.1} MB/s",
                    r.inputs,
                    r.outputs,
                    r.bytes_before,
                    r.bytes_after,
                    r.moved,
                    r.forgotten,
                    elapsed.as_secs_f64(),
                    r.io_bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
                );
            }
            if reports.is_empty() {
                println!("nothing to merge");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("merge: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shorty_service::keydir::Location;
    use shorty_service::log::hint::build_hint;
    use shorty_service::log::merge::{merging_file_name, Manifest};
    use shorty_service::log::record::{decode_record, Decoded, Link, Record};
    use shorty_service::log::segments::encode_sealed_segment;
    use std::collections::HashMap;

    /// Segments 1..=`segments` of `per` links each in `dir`, sealed and
    /// hinted; the links of every key divisible by `dead_every` are dead
    /// (the key directory forgets them, as a delete will). Returns the
    /// table, the key directory and the live links.
    fn fill(
        dir: &Path,
        segments: u64,
        per: u64,
        dead_every: u64,
    ) -> (Arc<SegmentTable>, Arc<KeyDir>, HashMap<u64, String>) {
        for n in 1..=segments {
            let urls: Vec<(u64, String)> = (0..per)
                .map(|i| {
                    let key = n * 10_000 + i;
                    (key, format!("https://example.com/{key}/{}", "x".repeat(40)))
                })
                .collect();
            let links: Vec<Link<'_>> = urls
                .iter()
                .map(|(k, u)| Link::plain(*k, *k, u.as_bytes()))
                .collect();
            let batches: Vec<&[Link<'_>]> = links.chunks(7).collect();
            let bytes = encode_sealed_segment(n, &batches);
            fs::write(dir.join(hint_file_name(n)), build_hint(n, &bytes).unwrap()).unwrap();
            fs::write(dir.join(segment_file_name(n)), bytes).unwrap();
        }
        fs::write(dir.join(crate::datadir::KEY_FILE), [9; 16]).unwrap();
        let table = Arc::new(SegmentTable::new(dir, 0));
        let all = KeyDir::new();
        crate::datadir::recover(dir, &table, &all, 2).unwrap();
        let keydir = Arc::new(KeyDir::new());
        let mut live = HashMap::new();
        for n in 1..=segments {
            for i in 0..per {
                let key = n * 10_000 + i;
                if key % dead_every != 0 {
                    keydir.insert(key, all.get(key).unwrap());
                    live.insert(key, format!("https://example.com/{key}/{}", "x".repeat(40)));
                }
            }
        }
        (table, keydir, live)
    }

    fn url_at(table: &SegmentTable, loc: Location) -> String {
        let bytes = fs::read(&table.get(loc.file).unwrap().path).unwrap();
        match decode_record(&bytes[loc.offset as usize..]) {
            Decoded::Record(Record::Link(l), _) => String::from_utf8(l.url.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn settings(threshold: f64) -> MergeSettings {
        MergeSettings {
            threshold,
            rate: u64::MAX,
            interval: Duration::ZERO,
            segment_bytes: 64 << 10,
            grace: Duration::ZERO,
            forget: None,
            nice: 0,
        }
    }

    /// A round reads every segment's usage once, however many merges it
    /// runs, and never reads its own outputs back: before this, each merge
    /// was followed by a full check that read every hint again and every
    /// output whole (seconds of CPU at 10M links, beside the serving core).
    #[test]
    fn a_round_reads_each_segment_once_and_never_its_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (table, keydir, live) = fill(dir.path(), 4, 300, 2);
        let size = |name: String| fs::metadata(dir.path().join(name)).unwrap().len();
        let segments: u64 = (1..=4).map(|n| size(segment_file_name(n))).sum();
        let hints: u64 = (1..=4).map(|n| size(hint_file_name(n))).sum();
        let metrics = MergeMetrics::default();
        let mut reports = Vec::new();
        // One segment per merge: four merges in the round.
        let round = Round {
            max_input: 1,
            max_merges: usize::MAX,
        };
        let quarter = settings(0.25);
        let mut with = Merger::new(&table, &keydir, &quarter, &metrics);
        merge_rounds(&mut with, round, |report, _| reports.push(report)).unwrap();
        assert_eq!(reports.len(), 4, "{reports:?}");
        // The check: each hint, and each segment whole once (its record
        // bytes); then each merge reads its input. Nothing else.
        assert_eq!(
            metrics.read_bytes.load(Ordering::Relaxed),
            hints + 2 * segments
        );
        // The outputs' record bytes came from the merges, and are right.
        let outputs: Vec<u64> = reports.iter().flat_map(|r| r.outputs.clone()).collect();
        let mut expected: Vec<(u64, u64)> = outputs
            .iter()
            .map(|&n| {
                let bytes = fs::read(dir.path().join(segment_file_name(n))).unwrap();
                (n, record_bytes(&bytes, n).unwrap())
            })
            .collect();
        let mut got: Vec<(u64, u64)> = with.known.iter().map(|(&n, &b)| (n, b)).collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(metrics.dead_bytes.load(Ordering::Relaxed), 0);
        for (key, url) in &live {
            assert_eq!(&url_at(&table, keydir.get(*key).unwrap()), url);
        }
        // The next round knows every segment: it reads the hints only, and
        // finds nothing to merge.
        let before = metrics.read_bytes.load(Ordering::Relaxed);
        let hints_now: u64 = outputs.iter().map(|&n| size(hint_file_name(n))).sum();
        let all = settings(0.0);
        let mut with = Merger {
            known: std::mem::take(&mut with.known),
            ..Merger::new(&table, &keydir, &all, &metrics)
        };
        merge_rounds(&mut with, Round::WHOLE, |report, _| {
            panic!("merged again: {report:?}")
        })
        .unwrap();
        assert_eq!(
            metrics.read_bytes.load(Ordering::Relaxed) - before,
            hints_now
        );
    }

    #[test]
    fn a_merge_on_disk_shrinks_the_log_and_a_restart_finds_every_live_link() {
        let dir = tempfile::tempdir().unwrap();
        let (table, keydir, live) = fill(dir.path(), 4, 300, 3);
        let disk = |d: &Path| -> u64 {
            crate::datadir::list_segments(d)
                .unwrap()
                .iter()
                .map(|n| fs::metadata(d.join(segment_file_name(*n))).unwrap().len())
                .sum()
        };
        let before = disk(dir.path());
        // A core's cached descriptor of an input, as the reads keep them.
        let held = File::open(dir.path().join(segment_file_name(1))).unwrap();
        assert!(held.metadata().unwrap().len() > 0);
        let metrics = MergeMetrics::default();
        // A third is dead: not over a half.
        assert!(Merger::new(&table, &keydir, &settings(0.5), &metrics)
            .merge_once()
            .unwrap()
            .is_none());
        assert!(metrics.dead_bytes.load(Ordering::Relaxed) > before / 4);
        let report = Merger::new(&table, &keydir, &settings(0.25), &metrics)
            .merge_once()
            .unwrap()
            .expect("over a quarter dead");
        assert_eq!(report.inputs, [1, 2, 3, 4]);
        assert!(report.outputs.iter().all(|&n| n > 4));
        assert_eq!(report.moved, live.len() as u64);
        assert_eq!(metrics.merges.load(Ordering::Relaxed), 1);
        assert_eq!(
            metrics.reclaimed_bytes.load(Ordering::Relaxed),
            before - disk(dir.path())
        );
        assert!(disk(dir.path()) < before * 3 / 4);
        for n in 1..=4 {
            assert!(!dir.path().join(segment_file_name(n)).exists());
            assert!(!dir.path().join(hint_file_name(n)).exists());
        }
        assert!(!dir.path().join(MANIFEST_FILE).exists());
        // Its blocks are back although it is still open.
        assert_eq!(held.metadata().unwrap().len(), 0);
        for (key, url) in &live {
            assert_eq!(&url_at(&table, keydir.get(*key).unwrap()), url);
        }
        // Nothing left to merge, even at 0%.
        assert!(Merger::new(&table, &keydir, &settings(0.0), &metrics)
            .merge_once()
            .unwrap()
            .is_none());
        // A restart loads exactly the live links, from the new hints.
        let (table2, keydir2) = (SegmentTable::new(dir.path(), 0), KeyDir::new());
        let report2 = crate::datadir::recover(dir.path(), &table2, &keydir2, 2).unwrap();
        assert_eq!(report2.links, live.len() as u64);
        assert_eq!(report2.from_hints, report2.segments);
        for (key, url) in &live {
            assert_eq!(&url_at(&table2, keydir2.get(*key).unwrap()), url);
        }
        assert_eq!(
            crate::tools::verify(dir.path()),
            std::process::ExitCode::SUCCESS
        );
    }

    #[test]
    fn a_start_finishes_a_committed_merge_and_discards_an_uncommitted_one() {
        let dir = tempfile::tempdir().unwrap();
        let (table, _, _) = fill(dir.path(), 2, 50, 1_000_000);
        let all = fs::read(dir.path().join(segment_file_name(1))).unwrap();
        // A committed merge of 1 and 2 into 3 that stopped before its
        // rename: 3 is still `.merging` (a copy of both, as a merge writes).
        let merged = {
            let mut links = Vec::new();
            let mut urls = Vec::new();
            for n in 1..=2 {
                let bytes = fs::read(dir.path().join(segment_file_name(n))).unwrap();
                shorty_service::log::scan::scan_segment(&bytes, n, |l, _| {
                    let l = l.link().unwrap();
                    urls.push((l.key, l.id, l.url.to_vec()))
                })
                .unwrap();
            }
            for (key, id, url) in &urls {
                links.push(Link::plain(*key, *id, url));
            }
            encode_sealed_segment(3, &[&links])
        };
        fs::write(dir.path().join(merging_file_name(3)), &merged).unwrap();
        fs::write(
            dir.path().join(MANIFEST_FILE),
            Manifest {
                inputs: vec![1, 2],
                outputs: vec![3],
            }
            .encode(),
        )
        .unwrap();
        // And a half-written output of a later, uncommitted merge.
        fs::write(dir.path().join(merging_file_name(4)), &all[..100]).unwrap();
        drop(table);
        // `verify` judges what a restart will load: segment 3, not 1 and 2.
        assert_eq!(
            crate::tools::verify(dir.path()),
            std::process::ExitCode::SUCCESS
        );
        let (table, keydir) = (SegmentTable::new(dir.path(), 0), KeyDir::new());
        let report = crate::datadir::recover(dir.path(), &table, &keydir, 2).unwrap();
        assert_eq!(report.links, 100);
        assert_eq!(report.segments, 1);
        assert_eq!(crate::datadir::list_segments(dir.path()).unwrap(), [3]);
        assert!(!dir.path().join(merging_file_name(4)).exists());
        assert!(!dir.path().join(MANIFEST_FILE).exists());
        // Segment numbers are never reused: 4 was handed out.
        assert!(table.next_number() >= 5);
    }

    #[test]
    fn a_damaged_manifest_fails_verify_and_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let _ = fill(dir.path(), 1, 10, 1_000_000);
        fs::write(dir.path().join(MANIFEST_FILE), b"SHORTYMG torn").unwrap();
        assert_eq!(
            crate::tools::verify(dir.path()),
            std::process::ExitCode::FAILURE
        );
        let err = crate::datadir::recover(
            dir.path(),
            &SegmentTable::new(dir.path(), 0),
            &KeyDir::new(),
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(MANIFEST_FILE), "{err}");
    }

    #[test]
    fn the_offline_tool_merges_a_stopped_server_s_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (table, _, _) = fill(dir.path(), 3, 40, 1_000_000);
        drop(table);
        // Nothing dead but the commit markers: 50% finds nothing, 0% all.
        assert_eq!(
            offline(dir.path(), 0.5, u64::MAX, QUARANTINE),
            std::process::ExitCode::SUCCESS
        );
        assert_eq!(
            crate::datadir::list_segments(dir.path()).unwrap(),
            [1, 2, 3]
        );
        assert_eq!(
            offline(dir.path(), 0.0, u64::MAX, QUARANTINE),
            std::process::ExitCode::SUCCESS
        );
        let left = crate::datadir::list_segments(dir.path()).unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0] > 3);
        let (table, keydir) = (SegmentTable::new(dir.path(), 0), KeyDir::new());
        let report = crate::datadir::recover(dir.path(), &table, &keydir, 1).unwrap();
        assert_eq!(report.links, 120);
        assert_eq!(report.from_hints, 1);
    }

    /// The server's default `--alias-quarantine`, as the tool's.
    const QUARANTINE: Duration = shorty_service::settings::DEFAULT_ALIAS_QUARANTINE;

    /// The offline merge forgets what the server's merge forgets: an
    /// alias's tombstone past its quarantine goes, one inside it stays
    /// (the tool used to keep every alias's tombstone).
    #[test]
    fn the_offline_merge_forgets_alias_tombstones_past_their_quarantine() {
        use shorty_service::keydir::{Ident, Target};
        use shorty_service::log::record::{Keyed, Tombstone, ALIAS_KEY, NO_ID};
        use shorty_service::log::segments::encode_sealed_records;
        let dir = tempfile::tempdir().unwrap();
        let write = |n: u64, records: &[Keyed<'_>]| {
            let bytes = encode_sealed_records(n, &[records]);
            fs::write(
                dir.path().join(hint_file_name(n)),
                build_hint(n, &bytes).unwrap(),
            )
            .unwrap();
            fs::write(dir.path().join(segment_file_name(n)), bytes).unwrap();
        };
        let options = |alias: &str| {
            let mut bytes = Vec::new();
            shorty_service::link::LinkMeta {
                alias: Some(alias.into()),
                ..Default::default()
            }
            .encode(&mut bytes);
            bytes
        };
        let (old, fresh) = (options("old-promo"), options("fresh-promo"));
        write(
            1,
            &[
                Keyed::Link(Link {
                    options: &old,
                    ..Link::plain(ALIAS_KEY, NO_ID, b"https://e.com/old")
                }),
                Keyed::Link(Link {
                    options: &fresh,
                    ..Link::plain(ALIAS_KEY, NO_ID, b"https://e.com/fresh")
                }),
                Keyed::Link(Link::plain(7, 1, b"https://e.com/7")),
            ],
        );
        let now = crate::keys::now_ms();
        let day = 86_400_000;
        write(
            2,
            &[
                // Deleted 31 days ago: its quarantine is over.
                Keyed::Tombstone(Tombstone {
                    key: ALIAS_KEY,
                    version: 1,
                    deleted_at_ms: now - 31 * day,
                    alias: Some(b"old-promo"),
                }),
                // Deleted a day ago: still quarantined.
                Keyed::Tombstone(Tombstone {
                    key: ALIAS_KEY,
                    version: 1,
                    deleted_at_ms: now - day,
                    alias: Some(b"fresh-promo"),
                }),
            ],
        );
        fs::write(dir.path().join(crate::datadir::KEY_FILE), [9; 16]).unwrap();
        assert_eq!(
            offline(dir.path(), 0.0, u64::MAX, QUARANTINE),
            std::process::ExitCode::SUCCESS
        );
        let (table, keydir) = (SegmentTable::new(dir.path(), 0), KeyDir::new());
        crate::datadir::recover(dir.path(), &table, &keydir, 1).unwrap();
        assert_eq!(
            keydir.lookup(Ident::Alias("old-promo")).map(|(t, _)| t),
            None,
            "past its quarantine, the tombstone is forgotten"
        );
        assert!(
            matches!(
                keydir.lookup(Ident::Alias("fresh-promo")),
                Some((Target::Deleted { .. }, _))
            ),
            "inside its quarantine, the tombstone stays"
        );
        assert!(keydir.get(7).is_some());
    }

    /// Segment 1: 20 promo aliases (deleted in 2) and 100 live links (keys
    /// 1..=100), few dead bytes; segment 2: 20 big aliases and every
    /// alias's tombstone, deleted 31 days ago (past the quarantine), mostly
    /// dead. One segment per merge, most dead first: segment 2's merge must
    /// keep the promo tombstones (their links are in segment 1, outside it),
    /// and segment 1's merge then drops those links. Returns the table, the
    /// key directory, settings that forget, and the live links.
    fn kept_tombstones_fixture(
        dir: &Path,
    ) -> (SegmentTable, KeyDir, MergeSettings, Vec<(u64, String)>) {
        use shorty_service::codes::CodeKey;
        use shorty_service::log::record::{Keyed, Tombstone, ALIAS_KEY, NO_ID};
        use shorty_service::log::segments::encode_sealed_records;
        let write = |n: u64, records: &[Keyed<'_>]| {
            let bytes = encode_sealed_records(n, &[records]);
            fs::write(dir.join(hint_file_name(n)), build_hint(n, &bytes).unwrap()).unwrap();
            fs::write(dir.join(segment_file_name(n)), bytes).unwrap();
        };
        let alias = |name: String| {
            let mut bytes = Vec::new();
            shorty_service::link::LinkMeta {
                alias: Some(name.as_str().into()),
                ..Default::default()
            }
            .encode(&mut bytes);
            (name, bytes)
        };
        let promo: Vec<_> = (0..20).map(|i| alias(format!("promo-{i}"))).collect();
        let big: Vec<_> = (0..20).map(|i| alias(format!("big-{i}"))).collect();
        let long = format!("https://e.com/{}", "x".repeat(1000));
        let plain: Vec<(u64, String)> = (1..=100)
            .map(|k| (k, format!("https://e.com/{k}/{}", "y".repeat(100))))
            .collect();
        fn aliased<'a>((_, o): &'a (String, Vec<u8>), url: &'a [u8]) -> Keyed<'a> {
            Keyed::Link(Link {
                options: o,
                ..Link::plain(ALIAS_KEY, NO_ID, url)
            })
        }
        let mut one: Vec<Keyed<'_>> = promo
            .iter()
            .map(|a| aliased(a, b"https://e.com/p"))
            .collect();
        one.extend(
            plain
                .iter()
                .map(|(k, u)| Keyed::Link(Link::plain(*k, *k, u.as_bytes()))),
        );
        write(1, &one);
        let deleted_at_ms = crate::keys::now_ms() - 31 * 86_400_000;
        let mut two: Vec<Keyed<'_>> = big.iter().map(|a| aliased(a, long.as_bytes())).collect();
        two.extend(promo.iter().chain(&big).map(|(name, _)| {
            Keyed::Tombstone(Tombstone {
                key: ALIAS_KEY,
                version: 1,
                deleted_at_ms,
                alias: Some(name.as_bytes()),
            })
        }));
        write(2, &two);
        fs::write(dir.join(crate::datadir::KEY_FILE), [9; 16]).unwrap();
        let table = SegmentTable::new(dir, 0);
        let keydir = KeyDir::new();
        let recovered = crate::datadir::recover(dir, &table, &keydir, 1).unwrap();
        let settings = MergeSettings {
            forget: Some(ForgetSource {
                codec: Codec::new(&CodeKey([9; 16])),
                ids: Arc::new(IdSpace::new(recovered.next_id)),
                quarantine: QUARANTINE,
            }),
            ..settings(0.0)
        };
        (table, keydir, settings, plain)
    }

    /// The fixture merged one segment per merge at `threshold`, by one
    /// round ([`merge_round`]) or by [`merge_rounds`]: its parts, the metrics
    /// and every merge's report.
    struct KeptRun {
        dir: tempfile::TempDir,
        table: SegmentTable,
        keydir: KeyDir,
        settings: MergeSettings,
        plain: Vec<(u64, String)>,
        metrics: MergeMetrics,
        reports: Vec<MergeReport>,
    }

    fn kept_run(threshold: f64, rounds: bool) -> KeptRun {
        let dir = tempfile::tempdir().unwrap();
        let (table, keydir, settings, plain) = kept_tombstones_fixture(dir.path());
        let settings = MergeSettings {
            threshold,
            ..settings
        };
        let metrics = MergeMetrics::default();
        let mut reports = Vec::new();
        let each = |report, _| reports.push(report);
        let one_by_one = Round {
            max_input: 1,
            max_merges: usize::MAX,
        };
        let mut with = Merger::new(&table, &keydir, &settings, &metrics);
        if rounds {
            merge_rounds(&mut with, one_by_one, each).unwrap();
        } else {
            merge_round(&mut with, one_by_one, each).unwrap();
        }
        KeptRun {
            dir,
            table,
            keydir,
            settings,
            plain,
            metrics,
            reports,
        }
    }

    /// Review 10: after a round whose merge kept tombstones, the dead-bytes
    /// gauge read low by exactly their bytes; it now says what the next
    /// check counts.
    #[test]
    fn after_a_round_the_dead_bytes_gauge_counts_the_tombstones_it_kept() {
        let run = kept_run(0.0, false);
        let reports = &run.reports;
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert_eq!(reports[0].inputs, [2]);
        assert_eq!(reports[0].tombstones_kept, 20);
        assert_eq!(reports[0].forgotten, 20, "the big ones go at once");
        assert!(reports[0].tombstones_kept_bytes >= 20 * 20);
        let rule = Rule::Forget(run.settings.forget.as_ref().unwrap().rule());
        let fresh: u64 = usages(
            &mut PacedFiles::new(run.dir.path(), u64::MAX),
            &run.table,
            &run.keydir,
            &mut RecordBytes::new(),
            &rule,
        )
        .iter()
        .map(|(_, u)| u.dead())
        .sum();
        assert_eq!(fresh, reports[0].tombstones_kept_bytes);
        assert_eq!(run.metrics.dead_bytes.load(Ordering::Relaxed), fresh);
    }

    /// Review 10: one offline `merge` gave back less than two, the
    /// tombstones a round's first merge kept (their links were in a segment
    /// its second merge dropped) waiting for a second run. Another round
    /// now follows at once.
    #[test]
    fn a_round_forgets_the_tombstones_its_own_later_merge_freed() {
        use shorty_service::keydir::Ident;
        let run = kept_run(0.0, true);
        let forgotten: u64 = run.reports.iter().map(|r| r.forgotten).sum();
        assert_eq!(forgotten, 40, "{:?}", run.reports);
        for i in 0..20 {
            for name in [format!("promo-{i}"), format!("big-{i}")] {
                assert!(run.keydir.lookup(Ident::Alias(&name)).is_none(), "{name}");
            }
        }
        for (k, u) in &run.plain {
            assert_eq!(&url_at(&run.table, run.keydir.get(*k).unwrap()), u);
        }
        assert_eq!(run.metrics.dead_bytes.load(Ordering::Relaxed), 0);
    }

    /// Review 10b: when the older records that kept a round's tombstones lie
    /// in a segment below the threshold (so no later merge of the round can
    /// free them), no second round follows: it merged its own output again
    /// for nothing on every trigger.
    #[test]
    fn no_second_round_when_nothing_after_the_keeping_merge_gave_anything() {
        // Segment 1 (a few dead promo links among live ones) stays out.
        let run = kept_run(0.2, true);
        let reports = &run.reports;
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].inputs, [2]);
        assert_eq!(reports[0].tombstones_kept, 20);
    }

    /// An export holds the readers' lock and the segments open: a merge
    /// then removes the segments it retires without emptying them, so the
    /// export reads them whole (review 7: it read emptied inputs as
    /// nothing and missed their links). Without a reader they are emptied.
    #[test]
    fn a_merge_leaves_the_segments_an_export_reads_whole() {
        use shorty_service::log::segments::encode_sealed_segment;
        for reading in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let bytes = encode_sealed_segment(
                1,
                // Two batches: the commit marker between them is dead.
                &[
                    &[Link::plain(7, 1, b"https://e.com/7")],
                    &[Link::plain(8, 2, b"https://e.com/8")],
                ],
            );
            fs::write(dir.path().join(segment_file_name(1)), &bytes).unwrap();
            fs::write(dir.path().join(crate::datadir::KEY_FILE), [9; 16]).unwrap();
            let lock = readers_file(dir.path()).unwrap();
            if reading {
                lock.lock_shared().unwrap();
            }
            let mut held = File::open(dir.path().join(segment_file_name(1))).unwrap();
            assert_eq!(
                offline(dir.path(), 0.0, u64::MAX, QUARANTINE),
                std::process::ExitCode::SUCCESS
            );
            assert!(!dir.path().join(segment_file_name(1)).exists(), "merged");
            let mut read = Vec::new();
            held.read_to_end(&mut read).unwrap();
            if reading {
                assert_eq!(read, bytes, "a segment an export reads stays whole");
            } else {
                assert!(read.is_empty(), "emptied when nobody reads it");
            }
        }
    }

    /// A retired input an export was reading is emptied once the export
    /// is gone, although a core's descriptor still holds it (review 8:
    /// its blocks stayed allocated until a restart).
    #[test]
    fn a_segment_left_whole_for_an_export_is_emptied_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let name = segment_file_name(1);
        fs::write(dir.path().join(&name), vec![7; 4096]).unwrap();
        let mut core = File::open(dir.path().join(&name)).unwrap();
        let export = readers_file(dir.path()).unwrap();
        export.lock_shared().unwrap();
        let mut files = PacedFiles::new(dir.path(), u64::MAX);
        assert!(!files.shut_out_readers(), "an export reads");
        files.empty_later(&name);
        files.remove(&name).unwrap();
        files.let_readers_in();
        let mut unemptied = std::mem::take(&mut files.unemptied);
        assert_eq!(unemptied.len(), 1);
        empty_unread(dir.path(), &mut unemptied);
        assert_eq!(unemptied.len(), 1, "kept whole while the export reads");
        assert_eq!(core.metadata().unwrap().len(), 4096);
        drop(export);
        empty_unread(dir.path(), &mut unemptied);
        assert!(unemptied.is_empty());
        let mut read = Vec::new();
        core.read_to_end(&mut read).unwrap();
        assert!(read.is_empty(), "emptied under the core's descriptor");
    }

    #[test]
    fn the_pace_holds_the_average_under_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = PacedFiles::new(dir.path(), 1 << 20);
        let started = Instant::now();
        files.create_synced("a", &vec![7; 300 << 10]).unwrap();
        assert_eq!(files.read("a").unwrap().len(), 300 << 10);
        // 600 KiB at 1 MiB/s: at least 0.58 s (a floor, not a speed).
        assert!(started.elapsed() >= Duration::from_millis(580));
        assert!(files.rename("a", "b").is_ok());
        files.create_synced("c", b"x").unwrap();
        assert!(files.rename("c", "b").is_err(), "a rename never replaces");
    }

    /// Updates and deletes on disk, merged, then a restart: updated links
    /// resolve to their newest URL, deleted ones stay deleted (their
    /// tombstones carried forward, also through a second merge that takes
    /// the tombstones' own segment), and the log shrank.
    #[test]
    fn updates_and_deletes_survive_merges_and_restarts() {
        use shorty_service::keydir::{Ident, Target};
        use shorty_service::log::record::{Keyed, Tombstone, NO_ID};
        use shorty_service::log::segments::encode_sealed_records;
        let dir = tempfile::tempdir().unwrap();
        let url = |key: u64, v: u64| format!("https://example.com/{key}/v{v}/{}", "x".repeat(60));
        let write = |n: u64, records: &[Keyed<'_>]| {
            let batches: Vec<&[Keyed<'_>]> = records.chunks(7).collect();
            let bytes = encode_sealed_records(n, &batches);
            fs::write(
                dir.path().join(hint_file_name(n)),
                build_hint(n, &bytes).unwrap(),
            )
            .unwrap();
            fs::write(dir.path().join(segment_file_name(n)), bytes).unwrap();
        };
        let keys: Vec<u64> = (1..=600).collect();
        for (n, chunk) in (1..).zip(keys.chunks(200)) {
            let urls: Vec<String> = chunk.iter().map(|&k| url(k, 0)).collect();
            let records: Vec<Keyed<'_>> = chunk
                .iter()
                .zip(&urls)
                .map(|(&k, u)| Keyed::Link(Link::plain(k, k, u.as_bytes())))
                .collect();
            write(n, &records);
        }
        // Segment 4: a third of the keys updated (version 1), a third deleted.
        let mut options = Vec::new();
        shorty_service::link::LinkMeta {
            version: 1,
            ..Default::default()
        }
        .encode(&mut options);
        let updated: Vec<(u64, String)> = keys
            .iter()
            .filter(|&&k| k % 3 == 1)
            .map(|&k| (k, url(k, 1)))
            .collect();
        let mut records: Vec<Keyed<'_>> = updated
            .iter()
            .map(|(k, u)| {
                Keyed::Link(Link {
                    options: &options,
                    ..Link::plain(*k, NO_ID, u.as_bytes())
                })
            })
            .collect();
        records.extend(keys.iter().filter(|&&k| k % 3 == 2).map(|&k| {
            Keyed::Tombstone(Tombstone {
                key: k,
                version: 1,
                deleted_at_ms: 1_000 + k,
                alias: None,
            })
        }));
        write(4, &records);
        fs::write(dir.path().join(crate::datadir::KEY_FILE), [9; 16]).unwrap();
        let disk = |d: &Path| -> u64 {
            crate::datadir::list_segments(d)
                .unwrap()
                .iter()
                .map(|n| fs::metadata(d.join(segment_file_name(*n))).unwrap().len())
                .sum()
        };
        let check = |context: &str| {
            let table = SegmentTable::new(dir.path(), 0);
            let keydir = KeyDir::new();
            crate::datadir::recover(dir.path(), &table, &keydir, 2).unwrap();
            for &k in &keys {
                match k % 3 {
                    0 => assert_eq!(url_at(&table, keydir.get(k).unwrap()), url(k, 0)),
                    1 => assert_eq!(url_at(&table, keydir.get(k).unwrap()), url(k, 1)),
                    _ => {
                        assert_eq!(keydir.get(k), None, "{k} deleted {context}");
                        assert!(
                            matches!(
                                keydir.lookup(Ident::Key(k)),
                                Some((Target::Deleted { deleted_at_ms, .. }, s))
                                    if deleted_at_ms == 1_000 + k && s.installed == 1
                            ),
                            "{k}'s tombstone {context}"
                        );
                    }
                }
            }
            (table, keydir)
        };
        let before = disk(dir.path());
        let (table, keydir) = check("before");
        let metrics = MergeMetrics::default();
        let report = Merger::new(&table, &keydir, &settings(0.25), &metrics)
            .merge_once()
            .unwrap()
            .expect("two thirds of 1-3 dead");
        let mut inputs = report.inputs.clone();
        inputs.sort_unstable();
        assert_eq!(inputs, [1, 2, 3], "segment 4 holds only records in force");
        let after = disk(dir.path());
        assert!(after < before * 3 / 4, "{after} of {before}");
        let (table, keydir) = check("after a merge and a restart");
        // Everything again, the tombstones' segment included: they stay.
        let report = Merger::new(&table, &keydir, &settings(0.0), &metrics)
            .merge_once()
            .unwrap()
            .expect("the markers are dead");
        assert!(report.inputs.contains(&4), "{report:?}");
        check("after a second merge and a restart");
    }

    /// A fill, half of it deleted, merged on disk with the lifecycle's
    /// rule: the tombstones go with the links they deleted, the key
    /// directory gives their slots back, a restart finds exactly the live
    /// half, and `verify` is clean. `MERGE_FILL=1000000` measures a
    /// bigger fill (printed).
    #[test]
    fn forgetting_tombstones_shrinks_the_log_and_the_key_directory() {
        use shorty_service::codes::CodeKey;
        use shorty_service::log::record::{Keyed, Tombstone};
        use shorty_service::log::segments::encode_sealed_records;
        let n: u64 = std::env::var("MERGE_FILL")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_000);
        let dir = tempfile::tempdir().unwrap();
        let codec = Codec::new(&CodeKey([9; 16]));
        let url = |id: u64| format!("https://example.com/{id}/{}", "x".repeat(40));
        let write = |number: u64, records: &[Keyed<'_>]| {
            let batches: Vec<&[Keyed<'_>]> = records.chunks(64).collect();
            let bytes = encode_sealed_records(number, &batches);
            fs::write(
                dir.path().join(hint_file_name(number)),
                build_hint(number, &bytes).unwrap(),
            )
            .unwrap();
            fs::write(dir.path().join(segment_file_name(number)), bytes).unwrap();
        };
        let per = 50_000u64;
        let mut number = 0;
        for start in (0..n).step_by(per as usize) {
            let urls: Vec<(u64, String)> = (start..n.min(start + per))
                .map(|id| (id, url(id)))
                .collect();
            let records: Vec<Keyed<'_>> = urls
                .iter()
                .map(|(id, u)| Keyed::Link(Link::plain(codec.key_of(*id), *id, u.as_bytes())))
                .collect();
            number += 1;
            write(number, &records);
        }
        // Every other link deleted, in later segments.
        let deleted: Vec<u64> = (0..n).filter(|id| id % 2 == 1).collect();
        for chunk in deleted.chunks(per as usize) {
            let records: Vec<Keyed<'_>> = chunk
                .iter()
                .map(|&id| {
                    Keyed::Tombstone(Tombstone {
                        key: codec.key_of(id),
                        version: 1,
                        deleted_at_ms: 1_000,
                        alias: None,
                    })
                })
                .collect();
            number += 1;
            write(number, &records);
        }
        fs::write(dir.path().join(crate::datadir::KEY_FILE), [9; 16]).unwrap();
        let disk = |d: &Path| -> u64 {
            crate::datadir::list_segments(d)
                .unwrap()
                .iter()
                .map(|n| fs::metadata(d.join(segment_file_name(*n))).unwrap().len())
                .sum()
        };
        let table = SegmentTable::new(dir.path(), 0);
        let keydir = KeyDir::new();
        let recovered = crate::datadir::recover(dir.path(), &table, &keydir, 2).unwrap();
        let (disk_before, slots_before, bytes_before) =
            (disk(dir.path()), keydir.len(), keydir.memory_bytes());
        assert_eq!(slots_before as u64, n, "a tombstone keeps its slot");
        let ids = Arc::new(IdSpace::new(recovered.next_id));
        let settings = MergeSettings {
            forget: Some(ForgetSource {
                codec: codec.clone(),
                ids: ids.clone(),
                quarantine: Duration::from_secs(30 * 86_400),
            }),
            ..settings(0.3)
        };
        let metrics = MergeMetrics::default();
        let mut with = Merger::new(&table, &keydir, &settings, &metrics);
        let mut forgotten = 0;
        while let Some(report) = with.merge_once().unwrap() {
            forgotten += report.forgotten;
            if report.reclaimed() == 0 && report.forgotten == 0 {
                break;
            }
        }
        let (disk_after, slots_after, bytes_after) =
            (disk(dir.path()), keydir.len(), keydir.memory_bytes());
        println!(
            "{n} links, half deleted: disk {disk_before} -> {disk_after} bytes, key directory \
             {slots_before} -> {slots_after} slots, {bytes_before} -> {bytes_after} bytes"
        );
        assert_eq!(forgotten, deleted.len() as u64);
        assert_eq!(slots_after as u64, n - deleted.len() as u64);
        assert!(
            bytes_after < bytes_before * 3 / 4,
            "{bytes_after} of {bytes_before}"
        );
        assert!(
            disk_after < disk_before * 6 / 10,
            "{disk_after} of {disk_before}"
        );
        // A restart: the live half, and nothing of the other.
        let (table2, keydir2) = (SegmentTable::new(dir.path(), 0), KeyDir::new());
        let report = crate::datadir::recover(dir.path(), &table2, &keydir2, 2).unwrap();
        assert_eq!(report.links, n - deleted.len() as u64);
        assert_eq!(keydir2.len() as u64, n - deleted.len() as u64);
        for id in (0..n).step_by(97) {
            let key = codec.key_of(id);
            if id % 2 == 1 {
                assert!(!keydir2.contains(key), "{id} came back");
            } else {
                assert_eq!(url_at(&table2, keydir2.get(key).unwrap()), url(id));
            }
        }
        // Their ids stay behind the generator: STATE's mark covers them.
        assert!(report.next_id >= n, "{} < {n}", report.next_id);
        assert_eq!(
            crate::tools::verify(dir.path()),
            std::process::ExitCode::SUCCESS
        );
    }

    /// The thread's nice value, from `/proc/self/task/TID/stat` (field 19).
    fn nice_of(tid: &str) -> i32 {
        let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }

    /// The merge thread runs at `--merge-nice` and in the idle I/O class;
    /// the thread that started it does neither.
    #[test]
    fn the_merge_thread_runs_at_a_lower_priority() {
        let dir = tempfile::tempdir().unwrap();
        let (table, keydir, _) = fill(dir.path(), 1, 10, 1_000_000);
        let me = rustix::thread::gettid().as_raw_nonzero().to_string();
        // The test may itself run niced: 19 is below anything else.
        let base = nice_of(&me);
        assert!(base < 19, "the test runs at nice 19 already");
        let settings = MergeSettings {
            nice: 19,
            ..settings(0.5)
        };
        let _thread = spawn_merger(
            table,
            keydir,
            settings,
            Arc::new(MergeMetrics::default()),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let merger = fs::read_dir("/proc/self/task").unwrap().find_map(|t| {
                let tid = t.ok()?.file_name().into_string().ok()?;
                let comm = fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
                (comm.trim() == "shorty-merge").then_some(tid)
            });
            // Its disk I/O in the idle class too.
            if merger.is_some_and(|tid| nice_of(&tid) == 19 && io_priority_of(&tid) == IOPRIO_IDLE)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no merge thread at nice 19 in the idle I/O class"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(nice_of(&me), base, "the caller keeps its priority");
        assert_ne!(
            io_priority_of(&me),
            IOPRIO_IDLE,
            "the caller keeps its I/O priority"
        );
    }

    /// `ioprio_get(IOPRIO_WHO_PROCESS, tid)`.
    fn io_priority_of(tid: &str) -> i32 {
        let tid: libc::c_long = tid.parse().unwrap();
        // SAFETY: three integers in, an integer out; no memory touched.
        #[allow(unsafe_code)]
        let value = unsafe { libc::syscall(libc::SYS_ioprio_get, 1 as libc::c_long, tid) };
        assert!(value >= 0, "ioprio_get: {}", io::Error::last_os_error());
        value as i32
    }
}
