//! One core's log writer: group commit, commit markers, seals, rolls and
//! disk-full repair, as a state machine with no I/O.
//!
//! The shard [`append`](LogWriter::append)s link records, each with a token
//! naming who waits for it. The backend asks [`poll_io`](LogWriter::poll_io)
//! for the next thing to do — a [`WriteBatch`] (everything appended since
//! the last batch: one write and one `fdatasync`) or a [`Repair`] — runs it,
//! and reports with [`io_done`](LogWriter::io_done), which says whose
//! records became durable or failed. [`poll_timeout`](LogWriter::poll_timeout)
//! says when the writer next needs the clock (an idle marker, a retry).
//!
//! One batch is in flight at a time; records appended meanwhile wait for
//! the next one, so one sync covers them all.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::log::record::{
    decode_own_record, encode_link, encode_marker, encode_preamble, encode_seal, encode_tombstone,
    Decoded, Keyed, Link, Record, Seal, Tombstone, NO_ID, PREAMBLE_LEN,
};
use crate::log::segments::{SegmentRef, SegmentTable};

/// When no batch follows a synced one within this time, the writer writes
/// (and syncs) a lone commit marker vouching for it, so an acknowledged
/// batch is left unvouched for at most this long (see [`crate::log::scan`]).
pub const VOUCH_DELAY: Duration = Duration::from_millis(10);

/// Whether acknowledged SHORTENs wait for `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Acknowledge only after the record is on stable storage.
    Always,
    /// Acknowledge once written to the OS. For benchmarks: a crash can lose
    /// acknowledged links. No commit marker is written in this mode (it
    /// would claim a durability that never was); segments are synced and
    /// sealed at a roll and at a clean stop.
    Never,
}

/// The writer's settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Size at which a segment is sealed and a new one started.
    pub segment_bytes: u64,
    /// See [`SyncPolicy`].
    pub sync: SyncPolicy,
    /// After a disk-full failure, how long to wait before trying again.
    pub retry_interval: Duration,
    /// Most bytes of records waiting for a batch; appends beyond it are
    /// refused (503) rather than buffered without bound.
    pub max_pending_bytes: usize,
}

/// Who waits for a record: the shard's operation id.
pub type Token = u64;

/// Why a record did not become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFailure {
    /// The file system is full (ENOSPC, EDQUOT); the writer retries by
    /// itself.
    DiskFull,
    /// Too many records already wait for a batch.
    Busy,
    /// The log cannot be written at all (an I/O error, a failed sync); the
    /// process stops.
    Broken,
}

impl LogFailure {
    /// The message a client sees.
    pub fn message(self) -> &'static str {
        match self {
            LogFailure::DiskFull => {
                "disk full (or out of file descriptors): the log cannot take new URLs until it can \
                 write again"
            }
            LogFailure::Busy => "the log is busy; retry",
            LogFailure::Broken => "the log cannot be written",
        }
    }
}

/// One write for the backend: bytes at an offset of one segment.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    /// The segment.
    pub segment: SegmentRef,
    /// Create the file first (it must not exist), and when `sync` sync its
    /// directory too.
    pub create: bool,
    /// Where in the file the bytes go.
    pub offset: u64,
    /// The records, back to back.
    pub bytes: Bytes,
    /// `fdatasync` after writing.
    pub sync: bool,
    /// Sync the segment's directory after the data, so the file itself
    /// survives power loss: set when a synced batch creates the segment,
    /// and on the seal of a segment created without syncing (`--sync
    /// never`), since a seal claims the whole segment is durable.
    pub sync_dir: bool,
    /// The bytes end with the segment's seal: close the file afterwards
    /// (truncating any O_DIRECT padding); it is never written again.
    pub seal: bool,
}

impl WriteBatch {
    /// The links the batch holds and the file offset of each.
    pub fn links(&self) -> impl Iterator<Item = (Link<'_>, u64)> {
        self.keyed().filter_map(|(record, offset)| match record {
            Keyed::Link(link) => Some((link, offset)),
            Keyed::Tombstone(_) => None,
        })
    }

    /// The keyed records (links and tombstones) the batch holds and the
    /// file offset of each.
    pub fn keyed(&self) -> impl Iterator<Item = (Keyed<'_>, u64)> {
        let mut pos = 0usize;
        std::iter::from_fn(move || loop {
            let rest = self.bytes.get(pos..)?;
            let at = pos;
            let skip = if at == 0 && self.create {
                PREAMBLE_LEN
            } else {
                // The batch's own bytes, encoded here: no checksum to check.
                match decode_own_record(rest) {
                    Decoded::Record(Record::Link(link), len) => {
                        pos += len;
                        return Some((Keyed::Link(link), self.offset + at as u64));
                    }
                    Decoded::Record(Record::Tombstone(tombstone), len) => {
                        pos += len;
                        return Some((Keyed::Tombstone(tombstone), self.offset + at as u64));
                    }
                    Decoded::Record(_, len) => len,
                    _ => return None,
                }
            };
            pos += skip;
        })
    }
}

/// After a disk-full failure: make the broken segment whole again before
/// the log goes on in a fresh one. Cut it back to its durable length, sync,
/// then append the seal and sync again — the seal must not reach the disk
/// before what it vouches for — or, when nothing of it was ever durable,
/// delete it. Rare; the runtime may run it off the serving core.
#[derive(Debug, Clone)]
pub struct Repair {
    /// The broken segment.
    pub segment: SegmentRef,
    /// Its durable length.
    pub truncate_to: u64,
    /// The seal to append and sync after truncating; empty when the file
    /// is to be removed instead.
    pub seal: Bytes,
}

/// What the backend should do next.
#[derive(Debug, Clone)]
pub enum LogIo {
    /// Write (and maybe sync) a batch.
    Write(WriteBatch),
    /// Repair a segment broken by a disk-full failure.
    Repair(Repair),
}

/// How a backend's attempt went, classified by the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoResult {
    /// Done.
    Ok,
    /// Creating or writing failed for lack of space; nothing was synced.
    DiskFull(String),
    /// Anything else: the writer stops.
    Fatal(String),
}

/// What became of the tokens of a finished operation.
#[derive(Debug, Default)]
pub struct Settled {
    /// Durable.
    pub durable: Vec<Token>,
    /// Failed, and why.
    pub failed: Vec<Token>,
    /// Why `failed` failed.
    pub failure: Option<LogFailure>,
    /// A segment sealed by this operation (for its hint file).
    pub sealed: Option<(SegmentRef, Seal)>,
}

/// Where the writer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogState {
    /// Taking records.
    Available,
    /// The disk was full; retrying.
    DiskFull,
    /// Failed for good; the process must stop.
    Broken(String),
}

#[derive(Debug, Clone, Copy, Default)]
struct Point {
    len: u64,
    crc: u32,
    links: u64,
    max_id: u64,
}

impl Point {
    fn seal(&self) -> Seal {
        Seal {
            data_len: self.len,
            crc: self.crc,
            links: self.links,
            max_id: self.max_id,
        }
    }
}

#[derive(Debug)]
struct Segment {
    seg: SegmentRef,
    /// Everything handed to the backend so far.
    queued: Point,
    /// Everything the backend reported written (and synced).
    durable: Point,
    /// The end vouched for by a marker that is durable.
    vouched: u64,
    /// The end of the last durable batch that held links: a marker
    /// vouches for data, not for
    /// markers, so once `vouched` reaches it an idle core writes nothing
    /// (issue 18, defect 4: a lone marker used to leave its own bytes
    /// unvouched and schedule another, 80 synced writes a second).
    data_end: u64,
    /// Its directory entry was synced when it was created.
    entry_synced: bool,
}

#[derive(Debug)]
enum InFlight {
    Write {
        tokens: Vec<Token>,
        /// The segment's state once it is written (for a seal: the point it
        /// seals).
        after: Point,
        marker: Option<u64>,
        /// The batch holds links, which a marker must vouch for (a marker
        /// or a probe's preamble alone needs none).
        data: bool,
        seal: bool,
        /// The segment's last records: its seal comes next.
        last: bool,
        probe: bool,
        started: Instant,
    },
    Repair {
        /// The segment, when the repair removes its file (nothing of it
        /// was durable): its number is used again by the next segment.
        removed: Option<SegmentRef>,
    },
}

/// One shard's log: buffers records and runs group commit.
#[derive(Debug)]
pub struct LogWriter {
    config: LogConfig,
    table: std::sync::Arc<SegmentTable>,
    current: Option<Segment>,
    /// Records appended since the last batch, and who waits for them.
    pending: BytesMut,
    pending_tokens: Vec<Token>,
    pending_links: u64,
    pending_max_id: u64,
    in_flight: Option<InFlight>,
    state: LogState,
    /// A segment a disk-full failure left broken, to repair.
    broken: Option<Segment>,
    retry_at: Option<Instant>,
    /// A segment whose file a repair removed, never holding anything
    /// durable: the next segment takes its number and table slot, so a
    /// disk-full outage that probes every second does not burn a segment
    /// number each time (issue 18, defect 6).
    spare: Option<SegmentRef>,
    vouch_due: Option<Instant>,
    /// The current segment is full (or the writer is stopping) and its
    /// records are synced: the next operation writes its seal.
    seal_due: bool,
    shutting_down: bool,
}

impl LogWriter {
    /// A writer creating its segments through `table`.
    pub fn new(config: LogConfig, table: std::sync::Arc<SegmentTable>) -> Self {
        Self {
            config,
            table,
            current: None,
            pending: BytesMut::new(),
            pending_tokens: Vec::new(),
            pending_links: 0,
            pending_max_id: 0,
            in_flight: None,
            state: LogState::Available,
            broken: None,
            retry_at: None,
            spare: None,
            vouch_due: None,
            seal_due: false,
            shutting_down: false,
        }
    }

    /// Where the writer stands.
    pub fn state(&self) -> &LogState {
        &self.state
    }

    /// Appends a link record for `token`.
    ///
    /// # Errors
    /// Why the record cannot be taken now (it is not appended).
    pub fn append(&mut self, link: &Link<'_>, token: Token) -> Result<(), LogFailure> {
        self.admit(link.encoded_len())?;
        encode_link(link, &mut self.pending);
        self.pending_tokens.push(token);
        self.pending_links += 1;
        if link.id != NO_ID {
            self.pending_max_id = self.pending_max_id.max(link.id);
        }
        Ok(())
    }

    /// Appends a tombstone for `token`.
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn append_tombstone(
        &mut self,
        tombstone: &Tombstone<'_>,
        token: Token,
    ) -> Result<(), LogFailure> {
        self.admit(tombstone.encoded_len())?;
        encode_tombstone(tombstone, &mut self.pending);
        self.pending_tokens.push(token);
        // The seal counts keyed records: the hint holds an entry for it.
        self.pending_links += 1;
        Ok(())
    }

    /// Whether a record of `len` bytes may be appended now.
    fn admit(&self, len: usize) -> Result<(), LogFailure> {
        match self.state {
            LogState::Available if self.shutting_down => return Err(LogFailure::Busy),
            LogState::Available => {}
            LogState::DiskFull => return Err(LogFailure::DiskFull),
            LogState::Broken(_) => return Err(LogFailure::Broken),
        }
        if self.pending.len() + len > self.config.max_pending_bytes {
            return Err(LogFailure::Busy);
        }
        Ok(())
    }

    /// `true` when [`poll_io`](Self::poll_io) has something to hand out now
    /// (ignoring timers): a cheap check for waking the log task.
    pub fn has_work(&self) -> bool {
        self.in_flight.is_none() && (!self.pending.is_empty() || self.seal_due)
    }

    /// When the writer next needs [`poll_io`](Self::poll_io) called even if
    /// nothing is appended: a due idle marker or a disk-full retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        match self.state {
            LogState::DiskFull => self.retry_at,
            LogState::Available => self.vouch_due,
            LogState::Broken(_) => None,
        }
    }

    /// Since when the operation in flight has been running, if it writes
    /// records (for stall detection).
    pub fn in_flight_since(&self) -> Option<Instant> {
        match &self.in_flight {
            Some(InFlight::Write { started, .. }) => Some(*started),
            _ => None,
        }
    }

    /// Begins a clean stop: no more appends; the current segment is sealed
    /// once what is pending is written.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// `true` once a clean stop has nothing left to do.
    pub fn is_shut_down(&self) -> bool {
        self.shutting_down
            && self.in_flight.is_none()
            && (self.state != LogState::Available
                || (self.pending.is_empty() && self.current.is_none()))
    }

    /// The next operation for the backend, if one is due.
    pub fn poll_io(&mut self, now: Instant) -> Option<LogIo> {
        if self.in_flight.is_some() {
            return None;
        }
        match self.state {
            LogState::Broken(_) => None,
            LogState::DiskFull => {
                if self.retry_at.is_some_and(|at| now < at) {
                    return None;
                }
                if let Some(broken) = &self.broken {
                    let keep = broken.durable.len >= PREAMBLE_LEN as u64;
                    self.in_flight = Some(InFlight::Repair {
                        removed: (!keep).then(|| broken.seg.clone()),
                    });
                    let mut seal = BytesMut::new();
                    if keep {
                        encode_seal(&broken.durable.seal(), &mut seal);
                    }
                    return Some(LogIo::Repair(Repair {
                        segment: broken.seg.clone(),
                        truncate_to: if keep { broken.durable.len } else { 0 },
                        seal: seal.freeze(),
                    }));
                }
                // Probe: a fresh segment holding only its preamble, synced.
                self.batch(now, true)
            }
            LogState::Available => {
                if self.seal_due {
                    return self.seal_batch(now);
                }
                let vouch = self.config.sync == SyncPolicy::Always
                    && self.vouch_due.is_some_and(|at| now >= at)
                    && self
                        .current
                        .as_ref()
                        .is_some_and(|s| s.data_end > s.vouched);
                let seal_now = self.shutting_down && self.current.is_some();
                if self.pending.is_empty() && !vouch && !seal_now {
                    return None;
                }
                self.batch(now, false)
            }
        }
    }

    /// Builds the next write batch from what is pending.
    fn batch(&mut self, now: Instant, probe: bool) -> Option<LogIo> {
        let mut create = false;
        if self.current.is_none() {
            let Some(seg) = self.spare.take().or_else(|| self.table.create()) else {
                self.state = LogState::Broken("the segment table is full".into());
                return None;
            };
            self.current = Some(Segment {
                seg,
                queued: Point::default(),
                durable: Point::default(),
                vouched: 0,
                data_end: 0,
                entry_synced: false,
            });
            create = true;
        }
        let segment = self.current.as_mut()?;
        let mut out = BytesMut::with_capacity(self.pending.len() + 128);
        if create {
            encode_preamble(segment.seg.number, &mut out);
        }
        // Everything durable is vouched for by the marker (lone markers
        // included), but one is written only when data needs it.
        let marker = (self.config.sync == SyncPolicy::Always && segment.data_end > segment.vouched)
            .then_some(segment.durable.len);
        if let Some(durable_end) = marker {
            encode_marker(durable_end, &mut out);
        }
        out.extend_from_slice(&self.pending);
        self.pending.clear();
        let offset = segment.queued.len;
        let after = Point {
            len: offset + out.len() as u64,
            crc: crc32c::crc32c_append(segment.queued.crc, &out),
            links: segment.queued.links + self.pending_links,
            max_id: segment.queued.max_id.max(self.pending_max_id),
        };
        self.pending_links = 0;
        self.pending_max_id = 0;
        // The segment is full, or the writer is stopping: these are its
        // last records. They are synced now, whatever the policy, and the
        // seal follows in an operation of its own, so a seal never reaches
        // the disk before the bytes it vouches for (a write can be torn
        // and its sectors reordered; the seal must not survive a crash that
        // the records before it did not).
        let last = !probe
            && (self.shutting_down || (after.len >= self.config.segment_bytes && after.links > 0));
        segment.queued = after;
        let sync = self.config.sync == SyncPolicy::Always || last || probe;
        let sync_dir = sync && create;
        segment.entry_synced |= sync_dir;
        let data = !self.pending_tokens.is_empty();
        self.in_flight = Some(InFlight::Write {
            tokens: std::mem::take(&mut self.pending_tokens),
            after,
            marker,
            data,
            seal: false,
            last,
            probe,
            started: now,
        });
        self.vouch_due = None;
        Some(LogIo::Write(WriteBatch {
            segment: segment.seg.clone(),
            create,
            offset,
            bytes: out.freeze(),
            sync,
            sync_dir,
            seal: false,
        }))
    }

    /// The seal of the current segment, whose records are all durable.
    fn seal_batch(&mut self, now: Instant) -> Option<LogIo> {
        let segment = self.current.as_mut()?;
        let point = segment.durable;
        let mut out = BytesMut::with_capacity(crate::log::record::SEAL_LEN);
        encode_seal(&point.seal(), &mut out);
        let after = Point {
            len: point.len + out.len() as u64,
            ..point
        };
        segment.queued = after;
        // A seal claims the whole segment survives power loss, so its
        // directory entry must too (`--sync never` created it unsynced).
        let sync_dir = !segment.entry_synced;
        segment.entry_synced = true;
        self.in_flight = Some(InFlight::Write {
            tokens: Vec::new(),
            after: point,
            marker: None,
            data: false,
            seal: true,
            last: false,
            probe: false,
            started: now,
        });
        Some(LogIo::Write(WriteBatch {
            segment: segment.seg.clone(),
            create: false,
            offset: point.len,
            bytes: out.freeze(),
            sync: true,
            sync_dir,
            seal: true,
        }))
    }

    /// Reports how the operation [`poll_io`](Self::poll_io) handed out went.
    pub fn io_done(&mut self, result: IoResult, now: Instant) -> Settled {
        let mut settled = Settled::default();
        let Some(in_flight) = self.in_flight.take() else {
            return settled;
        };
        match (in_flight, result) {
            (InFlight::Repair { removed }, IoResult::Ok) => {
                self.broken = None;
                self.spare = removed;
                self.retry_at = Some(now);
            }
            (InFlight::Repair { .. }, IoResult::DiskFull(_)) => {
                self.retry_at = Some(now + self.config.retry_interval);
            }
            (
                InFlight::Write {
                    tokens,
                    after,
                    marker,
                    data,
                    seal,
                    last,
                    probe,
                    ..
                },
                IoResult::Ok,
            ) => {
                settled.durable = tokens;
                if probe {
                    self.state = LogState::Available;
                    self.retry_at = None;
                }
                if let Some(segment) = self.current.as_mut() {
                    if seal {
                        settled.sealed = Some((segment.seg.clone(), after.seal()));
                        self.current = None;
                        self.seal_due = false;
                        return settled;
                    }
                    segment.durable = after;
                    if data {
                        segment.data_end = after.len;
                    }
                    if let Some(end) = marker {
                        segment.vouched = segment.vouched.max(end);
                    }
                    if last {
                        self.seal_due = true;
                    } else if self.config.sync == SyncPolicy::Always
                        && segment.data_end > segment.vouched
                    {
                        self.vouch_due = Some(now + VOUCH_DELAY);
                    }
                }
            }
            (InFlight::Write { tokens, .. }, IoResult::DiskFull(_)) => {
                settled.failed = tokens;
                self.fail_pending(&mut settled.failed);
                settled.failure = Some(LogFailure::DiskFull);
                self.state = LogState::DiskFull;
                self.retry_at = Some(now + self.config.retry_interval);
                self.broken = self.current.take();
                self.vouch_due = None;
                self.seal_due = false;
            }
            (in_flight, IoResult::Fatal(reason)) => {
                if let InFlight::Write { tokens, .. } = in_flight {
                    settled.failed = tokens;
                }
                self.fail_pending(&mut settled.failed);
                settled.failure = Some(LogFailure::Broken);
                self.state = LogState::Broken(reason);
                self.vouch_due = None;
            }
        }
        settled
    }

    fn fail_pending(&mut self, failed: &mut Vec<Token>) {
        failed.append(&mut self.pending_tokens);
        self.pending.clear();
        self.pending_links = 0;
        self.pending_max_id = 0;
    }
}
