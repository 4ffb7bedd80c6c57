//! The durable log: record format, segment files, and group commit.
//!
//! Each shard appends to its own segment files in the data directory, so no
//! two threads ever write the same file. A segment is a sequence of records:
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! | 0      | 4    | body length `n`, `u32` LE (at least 8)   |
//! | 4      | 4    | CRC32C of the body, `u32` LE             |
//! | 8      | n    | body: id `u64` LE, then the URL (UTF-8)  |
//!
//! **Commit markers.** Every batch but a segment's first begins with a
//! marker: a record with the reserved id [`MARKER_ID`] whose 8-byte body is
//! the offset at which the batch starts. The previous batch was synced
//! before this one was written, so a marker says "everything before this
//! offset is durable". Recovery uses it to tell damage in acknowledged data
//! (a valid marker beyond it) from a torn, unacknowledged tail.
//!
//! Segments are named `NNNNNNNNNNNNNNNNNNNN.log` (a 20-digit number, unique
//! across shards and runs); order does not matter on replay because every
//! record stands alone. A run never appends to a segment of an earlier run.
//!
//! [`LogWriter`] is sans-IO: [`append`](LogWriter::append) encodes a record
//! into memory and returns a [`Ticket`]; [`poll_batch`](LogWriter::poll_batch)
//! hands the backend everything appended since the last batch (group commit:
//! one write and one `fdatasync` for all of it); the backend reports back with
//! [`complete`](LogWriter::complete) or [`fail`](LogWriter::fail), and the
//! tickets up to the batch's end are then durable (or failed).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before a record's body.
pub const RECORD_HEADER_LEN: usize = 8;

/// Default size at which a shard starts a new segment: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Largest record body recovery accepts (16 MiB): far above any URL limit,
/// so a length above it can only be damage.
pub const MAX_RECORD_BODY: usize = 16 * 1024 * 1024;

/// The id reserved for commit markers; no URL ever gets it.
pub const MARKER_ID: u64 = u64::MAX;

/// Encoded size of a commit marker.
pub const MARKER_LEN: usize = RECORD_HEADER_LEN + 8 + 8;

/// Appends a commit marker stating that the first `durable_end` bytes of
/// the segment are durable.
pub fn encode_marker(durable_end: u64, dst: &mut impl BufMut) {
    encode_record(MARKER_ID, &durable_end.to_le_bytes(), dst);
}

/// Appends one record to `dst`.
pub fn encode_record(id: u64, url: &[u8], dst: &mut impl BufMut) {
    let body_len = 8 + url.len();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&id.to_le_bytes()), url);
    // URLs are bounded by `--max-url-bytes`, far below 4 GiB.
    dst.put_u32_le(u32::try_from(body_len).unwrap_or(u32::MAX));
    dst.put_u32_le(crc);
    dst.put_u64_le(id);
    dst.put_slice(url);
}

/// One record read back from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The URL's id (see [`crate::codes`]), or [`MARKER_ID`].
    pub id: u64,
    /// The long URL (a marker's durable offset, for a marker).
    pub url: &'a [u8],
}

impl Record<'_> {
    /// For a commit marker, the offset before which the segment is durable.
    pub fn marker(&self) -> Option<u64> {
        if self.id != MARKER_ID {
            return None;
        }
        Some(u64::from_le_bytes(self.url.try_into().ok()?))
    }
}

/// What the bytes at the front of a slice hold: the one decoder of the
/// record format, shared by the write path and recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A well-formed record, and how many bytes it occupies.
    Record(Record<'a>, usize),
    /// The header or the body runs past the end of the bytes.
    Incomplete,
    /// The length field is outside `8..=MAX_RECORD_BODY`.
    BadLength,
    /// The body does not match its checksum.
    BadChecksum,
}

/// Decodes the record at the front of `bytes`.
pub fn decode_record(bytes: &[u8]) -> Decoded<'_> {
    let Some(mut header) = bytes.get(..RECORD_HEADER_LEN) else {
        return Decoded::Incomplete;
    };
    let body_len = header.get_u32_le() as usize;
    let crc = header.get_u32_le();
    if !(8..=MAX_RECORD_BODY).contains(&body_len) {
        return Decoded::BadLength;
    }
    let Some(body) = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + body_len) else {
        return Decoded::Incomplete;
    };
    if crc32c::crc32c(body) != crc {
        return Decoded::BadChecksum;
    }
    let (id, url) = body.split_at(8);
    let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
    Decoded::Record(Record { id, url }, RECORD_HEADER_LEN + body_len)
}

/// Iterates over the well-formed records at the front of `bytes` (markers
/// included), stopping at the first that is not.
pub fn records(mut bytes: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || match decode_record(bytes) {
        Decoded::Record(record, len) => {
            bytes = bytes.get(len..).unwrap_or_default();
            Some(record)
        }
        _ => None,
    })
}

/// The file name of segment `number`.
pub fn segment_file_name(number: u64) -> String {
    format!("{number:020}.log")
}

/// The segment number of a file name, if it is a segment's.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Hands out segment numbers, shared by all shards of a process.
#[derive(Debug)]
pub struct SegmentNumbers(AtomicU64);

impl SegmentNumbers {
    /// Numbers from `first` on (recovery passes one past the largest found).
    pub fn new(first: u64) -> Self {
        Self(AtomicU64::new(first))
    }

    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Whether acknowledged SHORTENs wait for `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncPolicy {
    /// Acknowledge only after the record is on stable storage (group commit).
    Always,
    /// Acknowledge once written to the OS, without syncing. For benchmarks:
    /// a crash or power loss can lose acknowledged URLs.
    Never,
}

/// Acknowledgement handle for one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketStatus {
    /// Not yet durable.
    Pending,
    /// Durable (or, with [`SyncPolicy::Never`], written).
    Durable,
    /// Its batch failed to write or sync.
    Failed,
}

/// One group-commit batch for the backend to write.
#[derive(Debug)]
pub struct WriteBatch {
    /// Create this segment file first (and, when syncing, sync its
    /// directory after the data): set for a shard's first batch of a run and
    /// whenever the current segment is full.
    pub create: Option<PathBuf>,
    /// The segment file to write to.
    pub path: PathBuf,
    /// Where in the file the bytes go.
    pub offset: u64,
    /// The records, back to back.
    pub bytes: Bytes,
    /// Whether to `fdatasync` after writing.
    pub sync: bool,
    end: Ticket,
}

impl WriteBatch {
    /// The URL records the batch holds (not its marker), for inserting them
    /// into the index once the batch is durable.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        records(&self.bytes).filter(|r| r.marker().is_none())
    }
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    len: u64,
}

/// One shard's log: buffers records and runs group commit.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    numbers: std::sync::Arc<SegmentNumbers>,
    segment_bytes: u64,
    sync: SyncPolicy,
    segment: Option<Segment>,
    /// Segments this writer created, for the final sync at shutdown.
    created: Vec<PathBuf>,
    pending: BytesMut,
    /// Tickets are record sequence numbers + 1; `next` is the next ticket.
    next: u64,
    durable: u64,
    in_flight: bool,
    failed: bool,
}

impl LogWriter {
    /// A writer for segments in `dir`, numbered from `numbers`, rolled over
    /// at `segment_bytes`.
    pub fn new(
        dir: &Path,
        numbers: std::sync::Arc<SegmentNumbers>,
        segment_bytes: u64,
        sync: SyncPolicy,
    ) -> Self {
        Self {
            dir: dir.to_owned(),
            numbers,
            segment_bytes,
            sync,
            segment: None,
            created: Vec::new(),
            pending: BytesMut::new(),
            next: 1,
            durable: 0,
            in_flight: false,
            failed: false,
        }
    }

    /// Encodes a record; it is durable once its ticket's status says so.
    pub fn append(&mut self, id: u64, url: &[u8]) -> Ticket {
        if self.pending.is_empty() {
            // Room for the batch's commit marker, filled in (or dropped, for
            // a segment's first batch) by `poll_batch`; reserved here so the
            // batch is never copied to prepend it.
            self.pending.put_bytes(0, MARKER_LEN);
        }
        encode_record(id, url, &mut self.pending);
        let ticket = Ticket(self.next);
        self.next += 1;
        ticket
    }

    /// `true` once a write or sync failed: the log takes no more records
    /// until restart (after a failed `fsync` the kernel may have dropped the
    /// dirty pages, so retrying could report success for lost data).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// `true` when records wait for a batch and none is in flight.
    pub fn has_work(&self) -> bool {
        !self.in_flight && !self.pending.is_empty() && !self.failed
    }

    /// The status of `ticket`.
    pub fn status(&self, ticket: Ticket) -> TicketStatus {
        if ticket.0 <= self.durable {
            TicketStatus::Durable
        } else if self.failed {
            TicketStatus::Failed
        } else {
            TicketStatus::Pending
        }
    }

    /// Takes every record appended since the last batch, unless a batch is
    /// still in flight (group commit: records arriving meanwhile wait for the
    /// next one).
    pub fn poll_batch(&mut self) -> Option<WriteBatch> {
        if !self.has_work() {
            return None;
        }
        let mut bytes = self.pending.split();
        let full = self
            .segment
            .as_ref()
            .is_some_and(|s| s.len > 0 && s.len + bytes.len() as u64 > self.segment_bytes);
        let create = if self.segment.is_none() || full {
            let path = self.dir.join(segment_file_name(self.numbers.next()));
            self.segment = Some(Segment {
                path: path.clone(),
                len: 0,
            });
            self.created.push(path.clone());
            Some(path)
        } else {
            None
        };
        let segment = self.segment.as_mut()?;
        let offset = segment.len;
        if offset == 0 {
            // Nothing before it to vouch for.
            bytes.advance(MARKER_LEN);
        } else {
            let mut marker = Vec::with_capacity(MARKER_LEN);
            encode_marker(offset, &mut marker);
            bytes[..MARKER_LEN].copy_from_slice(&marker);
        }
        let bytes = bytes.freeze();
        segment.len += bytes.len() as u64;
        self.in_flight = true;
        Some(WriteBatch {
            create,
            path: segment.path.clone(),
            offset,
            bytes,
            sync: self.sync == SyncPolicy::Always,
            end: Ticket(self.next - 1),
        })
    }

    /// At graceful shutdown with [`SyncPolicy::Never`], syncs every segment
    /// this writer created, so a clean stop loses nothing even in benchmark
    /// mode. Blocking `std::fs`, run once at exit. With
    /// [`SyncPolicy::Always`] everything written is already durable.
    pub fn sync_at_shutdown(&self) -> std::io::Result<()> {
        if self.sync == SyncPolicy::Never {
            for path in &self.created {
                std::fs::File::open(path)?.sync_data()?;
            }
        }
        Ok(())
    }

    /// The backend wrote (and synced) `batch`: its tickets are durable.
    pub fn complete(&mut self, batch: &WriteBatch) {
        self.in_flight = false;
        self.durable = self.durable.max(batch.end.0);
    }

    /// The backend failed to write or sync `batch`: it and every later
    /// ticket fail, and the writer refuses further work.
    pub fn fail(&mut self, _batch: &WriteBatch) {
        self.in_flight = false;
        self.failed = true;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn writer(segment_bytes: u64) -> LogWriter {
        LogWriter::new(
            Path::new("/data"),
            Arc::new(SegmentNumbers::new(7)),
            segment_bytes,
            SyncPolicy::Always,
        )
    }

    #[test]
    fn record_layout() {
        let mut out = Vec::new();
        encode_record(0x0102, b"http://a", &mut out);
        assert_eq!(&out[..4], &16u32.to_le_bytes());
        assert_eq!(&out[4..8], &crc32c::crc32c(&out[8..]).to_le_bytes());
        assert_eq!(&out[8..16], &0x0102u64.to_le_bytes());
        assert_eq!(&out[16..], b"http://a");
        assert_eq!(
            records(&out).collect::<Vec<_>>(),
            [Record {
                id: 0x0102,
                url: b"http://a"
            }]
        );
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("code.key"), None);
    }

    #[test]
    fn group_commit_releases_in_order_and_batches_what_arrived_meanwhile() {
        let mut log = writer(DEFAULT_SEGMENT_BYTES);
        assert!(log.poll_batch().is_none(), "nothing to write");
        let a = log.append(1, b"http://a");
        let b = log.append(2, b"http://b");
        let first = log.poll_batch().unwrap();
        assert_eq!(
            first.create.as_deref(),
            Some(Path::new("/data/00000000000000000007.log"))
        );
        assert_eq!(first.offset, 0);
        assert_eq!(first.records().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
        // While the first batch is in flight, new records wait.
        let c = log.append(3, b"http://c");
        assert!(log.poll_batch().is_none(), "one batch in flight at a time");
        assert_eq!(log.status(a), TicketStatus::Pending);
        log.complete(&first);
        assert_eq!(log.status(a), TicketStatus::Durable);
        assert_eq!(log.status(b), TicketStatus::Durable);
        assert_eq!(log.status(c), TicketStatus::Pending);
        // One sync covers everything appended since the previous batch.
        let d = log.append(4, b"http://d");
        let second = log.poll_batch().unwrap();
        assert_eq!(second.create, None, "same segment");
        assert_eq!(second.offset, first.bytes.len() as u64);
        assert_eq!(second.records().map(|r| r.id).collect::<Vec<_>>(), [3, 4]);
        // The second batch opens with a marker vouching for the first.
        let marker = records(&second.bytes).next().unwrap();
        assert_eq!(marker.marker(), Some(first.bytes.len() as u64));
        assert_eq!(records(&first.bytes).filter_map(|r| r.marker()).count(), 0);
        log.complete(&second);
        assert_eq!(log.status(c), TicketStatus::Durable);
        assert_eq!(log.status(d), TicketStatus::Durable);
    }

    #[test]
    fn segments_roll_over_when_full() {
        let mut log = writer(40);
        log.append(1, b"http://aaaaaaaaaaaa"); // 35 bytes
        let first = log.poll_batch().unwrap();
        log.complete(&first);
        log.append(2, b"http://b");
        let second = log.poll_batch().unwrap();
        assert_eq!(
            second.create.as_deref(),
            Some(Path::new("/data/00000000000000000008.log"))
        );
        assert_eq!(second.offset, 0);
    }

    #[test]
    fn a_failed_batch_fails_its_tickets_and_everything_after() {
        let mut log = writer(DEFAULT_SEGMENT_BYTES);
        let a = log.append(1, b"http://a");
        let batch = log.poll_batch().unwrap();
        let b = log.append(2, b"http://b");
        log.fail(&batch);
        assert_eq!(log.status(a), TicketStatus::Failed);
        assert_eq!(log.status(b), TicketStatus::Failed);
        assert!(log.is_failed());
        log.append(3, b"http://c");
        assert!(
            log.poll_batch().is_none(),
            "a failed log writes nothing more"
        );
    }
}
