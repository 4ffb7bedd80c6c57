//! The log writer with a fake clock: what it writes when nothing happens,
//! and what a long disk-full outage costs (issue 18, defects 4 and 6).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shorty_service::log::record::{decode_record, Decoded, Link, Record};
use shorty_service::log::segments::SegmentTable;
use shorty_service::log::{IoResult, LogConfig, LogIo, LogState, LogWriter, SyncPolicy};

fn writer(segment_bytes: u64) -> (LogWriter, Arc<SegmentTable>) {
    let table = Arc::new(SegmentTable::new(Path::new("/nowhere"), 0));
    let config = LogConfig {
        segment_bytes,
        sync: SyncPolicy::Always,
        retry_interval: Duration::from_secs(1),
        max_pending_bytes: 1 << 20,
    };
    (LogWriter::new(config, table.clone()), table)
}

fn shorten(writer: &mut LogWriter, key: u64) {
    let url = format!("https://example.com/{key}");
    let link = Link {
        key,
        id: key,
        url: url.as_bytes(),
        options: &[],
    };
    writer.append(&link, key).expect("appended");
}

/// The kinds of the records in a write (after a new segment's preamble).
fn kinds(io: &LogIo) -> Vec<&'static str> {
    let LogIo::Write(batch) = io else {
        return vec!["repair"];
    };
    let mut pos = if batch.create {
        shorty_service::log::record::PREAMBLE_LEN
    } else {
        0
    };
    let mut out = Vec::new();
    while let Decoded::Record(record, len) = decode_record(&batch.bytes[pos..]) {
        out.push(match record {
            Record::Link(_) => "link",
            Record::Tombstone(_) => "tombstone",
            Record::Marker { .. } => "marker",
            Record::Seal(_) => "seal",
            Record::Header { .. } => "header",
        });
        pos += len;
    }
    out
}

/// Runs the writer over `idle` of fake time in 1 ms steps, doing every
/// operation it asks for (all succeed); returns the operations.
fn idle_for(writer: &mut LogWriter, now: &mut Instant, idle: Duration) -> Vec<LogIo> {
    let end = *now + idle;
    let mut done = Vec::new();
    while *now < end {
        while let Some(io) = writer.poll_io(*now) {
            writer.io_done(IoResult::Ok, *now);
            done.push(io);
        }
        *now += Duration::from_millis(1);
        if let Some(at) = writer.poll_timeout() {
            assert!(at >= *now - Duration::from_millis(1), "a timer in the past");
        }
    }
    done
}

/// Defect 4: after the last batch is vouched for, an idle core writes
/// nothing. One SHORTEN, then ten idle seconds of a 1 ms clock: one lone
/// marker (synced) vouches for the batch, and that is all.
#[test]
fn an_idle_core_writes_one_marker_then_nothing() {
    let (mut writer, _) = writer(64 << 20);
    let mut now = Instant::now();
    shorten(&mut writer, 1);
    let io = writer.poll_io(now).expect("the SHORTEN's batch");
    assert_eq!(kinds(&io), ["link"]);
    let settled = writer.io_done(IoResult::Ok, now);
    assert_eq!(settled.durable, [1]);

    let done = idle_for(&mut writer, &mut now, Duration::from_secs(10));
    let summary: Vec<_> = done.iter().map(kinds).collect();
    assert!(
        summary == [["marker"]],
        "{} writes while idle, the first ones {:?}",
        summary.len(),
        &summary[..summary.len().min(3)]
    );
    let LogIo::Write(marker) = &done[0] else {
        unreachable!()
    };
    assert!(marker.sync, "the lone marker is synced");
    assert_eq!(writer.poll_timeout(), None, "nothing left to wake for");

    // The next SHORTEN needs no marker of its own (the lone one vouched for
    // everything before it); the one after it carries one for it.
    shorten(&mut writer, 2);
    let io = writer.poll_io(now).unwrap();
    assert_eq!(kinds(&io), ["link"]);
    writer.io_done(IoResult::Ok, now);
    shorten(&mut writer, 3);
    let io = writer.poll_io(now).unwrap();
    assert_eq!(kinds(&io), ["marker", "link"]);
    writer.io_done(IoResult::Ok, now);
    let done = idle_for(&mut writer, &mut now, Duration::from_secs(5));
    let summary: Vec<_> = done.iter().map(kinds).collect();
    assert!(
        summary == [["marker"]],
        "{} writes while idle, the first ones {:?}",
        summary.len(),
        &summary[..summary.len().min(3)]
    );
}

/// An idle core that never took a link writes nothing at all, and a busy
/// one's batches are each vouched by the next batch's marker without
/// lone markers in between.
#[test]
fn a_core_that_never_took_a_link_writes_nothing() {
    let (mut writer, table) = writer(64 << 20);
    let mut now = Instant::now();
    assert!(idle_for(&mut writer, &mut now, Duration::from_secs(3)).is_empty());
    assert!(table.is_empty(), "no segment created");
}

/// Defect 6: while the disk stays full the writer probes every second,
/// and each failed probe's empty segment is removed; the next probe takes
/// the same number and table slot, so an outage burns no segment numbers.
#[test]
fn disk_full_probes_do_not_burn_segment_numbers() {
    let (mut writer, table) = writer(64 << 20);
    let mut now = Instant::now();
    shorten(&mut writer, 1);
    let LogIo::Write(first) = writer.poll_io(now).unwrap() else {
        panic!("a write")
    };
    assert!(first.create);
    let settled = writer.io_done(IoResult::DiskFull("ENOSPC".into()), now);
    assert_eq!(settled.failed, [1]);
    assert_eq!(*writer.state(), LogState::DiskFull);

    let mut probes = Vec::new();
    for _ in 0..30 {
        now += Duration::from_secs(1);
        let mut steps = 0;
        while let Some(io) = writer.poll_io(now) {
            steps += 1;
            assert!(steps < 10, "retry loop without end");
            match io {
                LogIo::Repair(repair) => {
                    assert!(repair.seal.is_empty(), "nothing durable: removed");
                    writer.io_done(IoResult::Ok, now);
                }
                LogIo::Write(probe) => {
                    assert!(probe.create && probe.sync);
                    probes.push(probe.segment.clone());
                    writer.io_done(IoResult::DiskFull("ENOSPC".into()), now);
                }
            }
        }
    }
    assert_eq!(probes.len(), 30, "one probe a second");
    assert!(
        probes.iter().all(|p| *p == first.segment),
        "every probe reuses segment {}: {:?}",
        first.segment.number,
        probes.iter().map(|p| p.number).collect::<Vec<_>>()
    );
    assert_eq!(table.len(), 1, "one table slot in all");

    // Space returns: the probe succeeds, links are taken again, in that
    // same segment.
    now += Duration::from_secs(1);
    while let Some(io) = writer.poll_io(now) {
        writer.io_done(IoResult::Ok, now);
        if let LogIo::Write(probe) = io {
            assert_eq!(probe.segment, first.segment);
        }
    }
    assert_eq!(*writer.state(), LogState::Available);
    shorten(&mut writer, 2);
    let LogIo::Write(batch) = writer.poll_io(now).unwrap() else {
        panic!("a write")
    };
    assert_eq!(batch.segment, first.segment);
    assert_eq!(writer.io_done(IoResult::Ok, now).durable, [2]);
    assert_eq!(table.len(), 1);
}
