//! The crash loop through the wire: what an operator meets when a server
//! dies under load and is started again, over and over.
//!
//! Servers run on small segments (`--segment-bytes 65536`, so kills land
//! around rolls and seals too), several connections stream pipelined
//! SHORTENs, and the server is killed at a random moment — `kill -9`
//! mostly, SIGTERM sometimes — then started again on the same data
//! directory, alternating the binaries given (shorty-uring and
//! shorty-glommio read each other's logs). After every restart every link
//! ever acknowledged must resolve to its own URL; a server that refuses to
//! start fails the loop.
//!
//! The servers merge as they go (`--merge-threshold 0%`: every sealed
//! segment is rewritten soon after its seal, since commit markers are dead
//! bytes), so kills also land inside merges, at every step of one, and
//! each cycle checks every link through the wire *while* merges run.
//!
//! CI runs [`DEFAULT_CYCLES`]; `CRASH_CYCLES=n` runs more, `CRASH_SEED=s`
//! repeats one sequence of kill moments and signals (the kernel's timing
//! still differs from run to run).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shorty_protocol::{ErrorCode, Reply, Request};

use crate::harness::Server;
use crate::wire::{code_of, Conn, Read2};

/// Cycles a default run makes: about 3 s each on a debug build, so the
/// loop stays well inside CI's budget.
pub const DEFAULT_CYCLES: u64 = 12;

/// Connections streaming SHORTENs at once.
const WRITERS: u64 = 6;

/// Each connection's pause between bursts.
const PAUSE: Duration = Duration::from_millis(5);

/// A small, seedable generator (xorshift64*): the suite needs no more,
/// and a failing run prints its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Runs the loop over `binaries` (taken in turn, one per restart) on one
/// data directory, for `CRASH_CYCLES` cycles (default [`DEFAULT_CYCLES`]).
///
/// # Panics
/// When an acknowledged link does not resolve to its URL after a restart,
/// or a server refuses to start.
pub fn crash_loop(binaries: &[&Path]) {
    assert!(!binaries.is_empty());
    let cycles = env_u64("CRASH_CYCLES").unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64("CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    }) | 1;
    eprintln!("crash loop: {cycles} cycles, CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    // `CRASH_KEEP=1` keeps the directory for a post-mortem.
    let _dir = if std::env::var_os("CRASH_KEEP").is_some() {
        eprintln!("crash loop: keeping {}", data.display());
        Err(dir.keep())
    } else {
        Ok(dir)
    };
    let args = [
        "--segment-bytes",
        "65536",
        "--shutdown-timeout",
        "2s",
        "--merge-threshold",
        "0%",
        "--merge-interval",
        "50ms",
    ];
    let (mut merges, mut settled) = (0, 0);
    // Every link acknowledged so far, by code.
    let mut acked: HashMap<String, String> = HashMap::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let bin = binaries[(cycle as usize) % binaries.len()];
        let name = bin.file_name().map_or_else(
            || bin.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let context = format!("cycle {cycle} ({name}), CRASH_SEED={seed}");
        // Said first, so a start that fails names its cycle.
        eprintln!("{context}: starting");
        let t0 = Instant::now();
        let server = Server::start(bin, &data, &args);
        let t1 = Instant::now();
        // Merges this start settled (a kill inside one).
        let log = server.log();
        settled += log.matches("finished a merge").count()
            + log.matches("undid a merge").count()
            + log.matches("unfinished merge output").count();
        check_all(&server, &acked, &context);
        let t2 = Instant::now();
        // Stream, then kill at a random moment.
        let run_for = Duration::from_millis(300 + rng.below(1200));
        let sigterm = rng.below(5) == 0;
        let (new, merged) = stream_until_killed(server, &acked, cycle, run_for, sigterm, &context);
        merges += merged;
        eprintln!(
            "{context}: started in {:.1?}, checked {} in {:.1?}, {} new in {run_for:.1?} \
             then {} ({:.1?})",
            t1 - t0,
            acked.len(),
            t2 - t1,
            new.len(),
            if sigterm { "SIGTERM" } else { "SIGKILL" },
            t2.elapsed(),
        );
        for (code, url) in new {
            if let Some(old) = acked.insert(code.clone(), url.clone()) {
                panic!("{context}: code {code} handed out twice: {old} and {url}");
            }
        }
    }
    // A last start checks what the last kill left.
    let bin = binaries[(cycles as usize) % binaries.len()];
    eprintln!("crash loop: the last start ({})", bin.display());
    let server = Server::start(bin, &data, &args);
    check_all(
        &server,
        &acked,
        &format!("after the last cycle, CRASH_SEED={seed}"),
    );
    eprintln!(
        "crash loop: {cycles} cycles, {} links acknowledged, all resolve, {merges} merges, \
         {settled} interrupted ones settled at start ({:.1?})",
        acked.len(),
        started.elapsed()
    );
    assert!(
        merges > 0 || cycles < 4,
        "the servers merged while they ran"
    );
    assert!(
        acked.len() as u64 > cycles * 10,
        "the streams were running ({} acknowledged)",
        acked.len()
    );
}

/// Streams SHORTENs from [`WRITERS`] connections for `run_for`, then kills
/// the server (SIGTERM when `sigterm`, else SIGKILL) while they still
/// stream; returns what was acknowledged. Returns once the old process's
/// listener is gone, so the next start does not race it.
fn stream_until_killed(
    server: Server,
    before: &HashMap<String, String>,
    cycle: u64,
    run_for: Duration,
    sigterm: bool,
    context: &str,
) -> (Vec<(String, String)>, usize) {
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (acked, stop, addr) = (acked.clone(), stop.clone(), server.addr());
            std::thread::spawn(move || write_links(addr, cycle, w, &acked, &stop))
        })
        .collect();
    std::thread::sleep(run_for);
    // Every link so far resolves while the streams go on and the merge
    // thread rewrites the segments they seal.
    // (This cycle's links, which the merges are moving now, and a sample
    // of the older ones, so the loop stays short.)
    let mut all: HashMap<String, String> = before
        .iter()
        .take(2_000)
        .map(|(c, u)| (c.clone(), u.clone()))
        .collect();
    all.extend(acked.lock().unwrap().iter().cloned());
    check_all(&server, &all, &format!("{context}, under load"));
    let merges = server.log().matches("merged inputs").count();
    let addrs = [server.addr(), server.http_addr()];
    if sigterm {
        let mut server = server;
        server.terminate();
        let status = server.wait(Duration::from_secs(30));
        assert!(status.success(), "{context}: SIGTERM exit {status}");
    } else {
        server.kill9();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread");
    }
    // A killed io_uring process keeps its sockets (and the data
    // directory's lock) for a moment after it is reaped. (Should another
    // process take the freed port meanwhile, the wait just ends at the
    // deadline; a lock still held would then fail the next start loudly.)
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in addrs {
        while Instant::now() < deadline
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    (acked, merges)
}

/// One connection's stream: pipelined bursts of 1–16 SHORTENs with URLs
/// of varied length, until the server dies or `stop`.
fn write_links(
    addr: SocketAddr,
    cycle: u64,
    writer: u64,
    acked: &Mutex<Vec<(String, String)>>,
    stop: &AtomicBool,
) {
    let Some(mut conn) = Conn::try_connect(addr) else {
        return;
    };
    let mut rng = Rng((cycle << 8 | writer) * 0x9E37_79B9 + 7);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let burst = 1 + rng.below(16);
        let urls: Vec<String> = (0..burst)
            .map(|k| {
                let pad = "p".repeat(rng.below(300) as usize);
                format!("https://e.com/{cycle}/{writer}/{i}/{k}/{pad}")
            })
            .collect();
        let mut wire = Vec::new();
        for url in &urls {
            Request::Shorten(url.as_bytes())
                .encode_frame(&mut wire)
                .unwrap();
        }
        if conn.try_send_raw(&wire).is_err() {
            return;
        }
        for url in urls {
            match conn.read_frame_within(Duration::from_secs(10)) {
                Read2::Frame(payload) => match Reply::decode_payload(payload) {
                    Ok(Reply::Shortened(short)) => {
                        let short = String::from_utf8(short.to_vec()).unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push((code_of(&short).to_owned(), url));
                    }
                    // Refused (a clean stop began): not acknowledged.
                    Ok(_) => {}
                    Err(e) => panic!("an undecodable reply: {e:?}"),
                },
                // The server died.
                Read2::Closed | Read2::TimedOut => return,
            }
        }
        i += 1;
        // A breath between bursts: the log still batches (six streams),
        // and every restart's check of every link so far stays short.
        std::thread::sleep(PAUSE);
    }
}

/// Every link in `acked` resolves to its own URL.
fn check_all(server: &Server, acked: &HashMap<String, String>, context: &str) {
    let links: Vec<(&String, &String)> = acked.iter().collect();
    let mut conn = server.connect();
    for chunk in links.chunks(2_000) {
        let mut wire = Vec::new();
        for (code, _) in chunk {
            Request::Resolve(code.as_bytes())
                .encode_frame(&mut wire)
                .unwrap();
        }
        conn.send_raw(&wire);
        for (code, url) in chunk {
            let mut reply = conn.reply();
            // A read slower than --store-timeout on a loaded machine is
            // answered 503: not a loss; asked again.
            let mut retries = 0;
            while matches!(&reply, Reply::Error { code: c, .. } if *c == ErrorCode::OVERLOADED)
                && retries < 20
            {
                retries += 1;
                std::thread::sleep(Duration::from_millis(100));
                let mut again = server.connect();
                reply = again.resolve(code);
            }
            assert!(
                reply == Reply::Resolved(Bytes::from((*url).clone())),
                "{context}: acknowledged code {code} answers {reply:?}, not {url}; \
                 server log:\n{}",
                server.log()
            );
        }
    }
}
