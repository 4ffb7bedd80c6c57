//! A long disk-full outage, and the README's remedy for it (free space; the
//! server takes links again by itself): what the retries cost while the
//! disk stays full (issue 18, defect 6).

use std::path::Path;
use std::time::{Duration, Instant};

use shorty_protocol::{ErrorCode, Reply, Request};

use crate::harness::{LoopFs, Server};
use crate::wire::code_of;

/// A loop-mounted ext4 of `mib` MiB, or `None` (with a message) where one
/// cannot be mounted. Under `CI=true` a missing tool fails the test
/// instead: CI must never pass a case it did not run.
pub fn loop_fs_or_skip(mib: u64) -> Option<LoopFs> {
    match LoopFs::new(mib) {
        Ok(fs) => Some(fs),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true, but a loop file system cannot be mounted here: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a loop file system here: {why}");
            None
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .expect("the server's /proc/PID/fd")
}

fn newest_segment(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("data directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// While the disk stays full the writer retries every second; ten seconds
/// of retries must not cost a file descriptor (glommio leaked one, and a
/// DMA writer, per retry) nor a segment number each (both backends burned
/// one per probe). Freeing space then brings new links back without a
/// restart, in the segment the probes kept trying, and every link
/// acknowledged before the outage survives a restart.
pub fn a_long_disk_full_outage_leaks_no_fds_and_burns_no_segment_numbers(bin: &Path) {
    let Some(fs) = loop_fs_or_skip(24) else {
        return;
    };
    let data = fs.path().join("data");
    // One core: every retry is this core's, and its fds are counted alone.
    let args = &[
        "--threads",
        "1",
        "--cache-bytes",
        "0",
        "--segment-bytes",
        "1048576",
    ];
    let server = Server::start(bin, &data, args);
    let mut conn = server.connect();
    let before: Vec<(String, String)> = (0..50)
        .map(|i| {
            let url = format!("https://example.com/before-outage/{i}");
            (code_of(&conn.shorten(&url)).to_owned(), url)
        })
        .collect();
    let t0 = Instant::now();
    let filler = fs.path().join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xAB; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    // Fill what is left (root's reserve) until the log reports the full
    // disk, in pipelined bursts so that it takes few syncs.
    let mut full = false;
    for round in 0..200 {
        let urls: Vec<String> = (0..64)
            .map(|i| {
                format!(
                    "https://example.com/filling/{round}/{i}/{}",
                    "y".repeat(400)
                )
            })
            .collect();
        let mut wire = Vec::new();
        for url in &urls {
            Request::Shorten(url.as_bytes())
                .encode_frame(&mut wire)
                .unwrap();
        }
        conn.send_raw(&wire);
        for _ in &urls {
            if let Some((code, message)) = conn.reply().as_error() {
                assert_eq!(code, ErrorCode::OVERLOADED, "{message}");
                assert!(message.contains("disk full"), "{message}");
                full = true;
            }
        }
        if full {
            break;
        }
    }
    assert!(full, "the disk never filled");
    eprintln!("disk full after {:.1?}", t0.elapsed());
    // Let the first retries settle, then count over ten more.
    std::thread::sleep(Duration::from_millis(2500));
    let (fds, newest) = (open_fds(server.pid()), newest_segment(&data));
    std::thread::sleep(Duration::from_secs(10));
    let fds_after = open_fds(server.pid());
    assert!(
        fds_after <= fds,
        "open fds grew from {fds} to {fds_after} over ten seconds of disk-full retries"
    );
    let log = server.log();
    assert!(log.contains("the disk is full"), "{log}");
    // A restart while the disk is still full (a deploy, a watchdog or OOM
    // kill) starts and keeps redirecting: hints it cannot write or seals it
    // cannot append cost the next start a scan, never this start.
    drop(conn);
    let _ = server.stop();
    let server = Server::start(bin, &data, args);
    let mut conn = server.connect();
    for (code, url) in &before {
        assert_eq!(
            conn.resolve(code),
            Reply::Resolved(bytes::Bytes::from(url.clone())),
            "code {code} after a restart on the full disk"
        );
    }
    let newest = newest.max(newest_segment(&data));
    // The remedy: free space. New links come back by themselves.
    std::fs::remove_file(&filler).unwrap();
    let after =
        crate::cases::shorten_once_space_returns(&mut conn, "https://example.com/after-outage");
    let newest_after = newest_segment(&data);
    assert!(
        newest_after <= newest + 1,
        "segment numbers went from {newest} to {newest_after} during the outage"
    );
    drop(conn);
    assert!(server.stop().success());
    let server = Server::start(bin, &data, &[]);
    let mut conn = server.connect();
    for (code, url) in before
        .iter()
        .chain([&(after, "https://example.com/after-outage".to_owned())])
    {
        assert_eq!(
            conn.resolve(code),
            Reply::Resolved(bytes::Bytes::from(url.clone())),
            "code {code}"
        );
    }
}
