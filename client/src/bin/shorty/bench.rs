//! `shorty bench`: the seed's benchmark, grown up.
//!
//! Agents run as tasks on a small tokio runtime. In `connect` mode each
//! exchange opens a connection, sends one request, reads the reply and
//! closes, like the seed's client; in `pipeline` mode each agent keeps one
//! connection with `--depth` requests in flight. Every second it prints the
//! rate, as the seed's benchmark did; at the end the total time, errors by
//! kind, latency percentiles from an HDR histogram, and its own CPU use (and
//! the server's, given `--server-pid`), so one can tell whether the server
//! or the generator was the bottleneck.
//!
//! One process can hold about as many connections as its open-file limit;
//! beyond that, `--processes N` (chosen automatically when needed) runs
//! worker copies of this program and merges their results. Beyond ~28,000
//! connections to one address, `--source` spreads them over several local
//! addresses (automatic on loopback).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, IsTerminal};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use shorty_client::{Client, Options};
use shorty_protocol::frame::{FrameDecoder, Status};
use shorty_protocol::{Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::report::{histogram_pairs, new_histogram, Latency, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// One request per connection: connect, send, read, close.
    Connect,
    /// Persistent connections with `--depth` requests in flight each.
    Pipeline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Op {
    /// SHORTEN a fresh URL each time.
    Shorten,
    /// RESOLVE codes created before the run starts.
    Resolve,
    /// 1 SHORTEN to 9 RESOLVEs.
    Mix,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// Concurrent agents (connections).
    #[arg(long, short, default_value_t = 10)]
    concurrency: usize,
    /// Total requests (or connections) to make.
    #[arg(long, short = 'n', conflicts_with = "duration")]
    requests: Option<u64>,
    /// How long to run [default: 10s unless --requests is given].
    #[arg(long, short, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// `connect`: one exchange per connection; `pipeline`: persistent
    /// connections with --depth requests in flight.
    #[arg(long, value_enum, default_value = "connect")]
    mode: Mode,
    /// Requests in flight per connection in pipeline mode.
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// In pipeline mode, send --depth requests at once and wait for all
    /// their replies before sending more (as `redis-benchmark -P` does),
    /// instead of refilling the window as replies arrive.
    #[arg(long)]
    burst: bool,
    /// What to ask for.
    #[arg(long, value_enum, default_value = "shorten")]
    op: Op,
    /// RESOLVE codes read from FILE (JSON lines with a "code" field, as
    /// `shorty-uring export` writes them) instead of 1,000 made for the run:
    /// for reads spread over every stored link (a cold cache).
    #[arg(long)]
    codes: Option<std::path::PathBuf>,
    /// Print the result as one JSON object (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Worker processes [default: as many as the open-file limit requires].
    #[arg(long)]
    processes: Option<usize>,
    /// Local addresses to spread connections over, comma-separated
    /// [default on loopback: 127.0.0.1, 127.0.0.2, ... one per 25,000
    /// connections].
    #[arg(long, value_delimiter = ',')]
    source: Vec<IpAddr>,
    /// Generator threads per process.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also report this server process's CPU time (Linux: /proc/PID/stat).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Internal: run as a worker process of a multi-process run.
    #[arg(long, hide = true)]
    worker: bool,
}

/// Connections per source address before another is used; below the
/// ~28,000 ephemeral ports of one address.
const CONNECTIONS_PER_SOURCE: usize = 25_000;
/// Descriptors kept free for everything that is not an agent's socket.
const FD_RESERVE: usize = 200;
/// URLs created for the resolve and mix workloads.
const SEED_CODES: usize = 1000;

/// What agents share.
struct Shared {
    addr: SocketAddr,
    legacy: bool,
    mode: Mode,
    op: Op,
    depth: usize,
    burst: bool,
    timeout: Duration,
    sources: Vec<IpAddr>,
    codes: Vec<String>,
    /// Requests left to claim (`u64::MAX`: run until the deadline).
    budget: AtomicU64,
    deadline: Option<Instant>,
    ok: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn claim(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                if left == u64::MAX {
                    Some(left)
                } else {
                    left.checked_sub(1)
                }
            })
            .is_ok()
    }

    fn error(&self, kind: impl Into<String>) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.into())
            .or_default() += 1;
    }

    fn request(&self, agent: usize, seq: u64, out: &mut BytesMut) -> Expect {
        let shorten = match self.op {
            Op::Shorten => true,
            Op::Resolve => false,
            Op::Mix => seq.is_multiple_of(10),
        };
        if shorten {
            // About 60 bytes, like a typical long URL of the figures.
            let url = format!("https://www.example.com/articles/2026/bench-{agent}-{seq:012}");
            let request = if self.legacy {
                Request::Bare(url.as_bytes())
            } else {
                Request::Shorten(url.as_bytes())
            };
            let _ = request.encode_frame(out);
            if self.legacy {
                Expect::Bare
            } else {
                Expect::Shortened
            }
        } else {
            // Spread over the codes pseudo-randomly: with --codes from an
            // export, consecutive codes would also be consecutive on disk.
            let mix = ((agent as u64) << 40 ^ seq).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let code = &self.codes[((mix >> 16) % self.codes.len() as u64) as usize];
            let _ = Request::Resolve(code.as_bytes()).encode_frame(out);
            Expect::Resolved
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Shortened,
    Bare,
    Resolved,
}

fn check(reply: &Reply, expect: Expect) -> Result<(), String> {
    match (reply, expect) {
        (Reply::Shortened(_), Expect::Shortened)
        | (Reply::Bare(_), Expect::Bare)
        | (Reply::Resolved(_), Expect::Resolved) => Ok(()),
        (reply, _) => Err(match reply.as_error() {
            Some((code, _)) => format!("server {code}"),
            None => "unexpected reply".into(),
        }),
    }
}

pub(crate) fn run(
    server: &str,
    legacy: bool,
    timeout: Duration,
    args: &BenchArgs,
) -> Result<ExitCode, String> {
    if legacy && args.op != Op::Shorten {
        return Err(
            "--legacy only supports --op shorten (the seed protocol has no RESOLVE)".into(),
        );
    }
    if args.concurrency == 0 || args.depth == 0 || args.threads == 0 {
        return Err("--concurrency, --depth and --threads must be at least 1".into());
    }
    let addr = server
        .to_socket_addrs()
        .map_err(|e| format!("{server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server}: no address"))?;
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024) as usize;
    let per_process_max = fd_limit.saturating_sub(FD_RESERVE).max(1);
    let processes = args
        .processes
        .unwrap_or_else(|| args.concurrency.div_ceil(per_process_max))
        .max(1);
    if !args.worker && args.concurrency.div_ceil(processes) > per_process_max {
        return Err(format!(
            "{} connections need more than the open-file limit ({fd_limit}) allows per process: use --processes {}",
            args.concurrency,
            args.concurrency.div_ceil(per_process_max)
        ));
    }
    let sources = if !args.source.is_empty() {
        args.source.clone()
    } else if addr.ip().is_loopback() && addr.is_ipv4() && args.concurrency > CONNECTIONS_PER_SOURCE
    {
        (1..=args.concurrency.div_ceil(CONNECTIONS_PER_SOURCE))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
            .collect()
    } else {
        Vec::new()
    };
    let duration = match (args.requests, args.duration) {
        (None, None) => Some(Duration::from_secs(10)),
        (_, d) => d,
    };
    let codes = match (&args.codes, args.op) {
        (_, Op::Shorten) => Vec::new(),
        (Some(file), _) => codes_from(file)?,
        (None, _) => seed_codes(server, timeout)?,
    };

    if processes > 1 && !args.worker {
        return run_multi(
            server, legacy, timeout, args, processes, duration, &sources, &codes,
        );
    }

    let shared = Arc::new(Shared {
        addr,
        legacy,
        mode: args.mode,
        op: args.op,
        depth: args.depth,
        burst: args.burst,
        timeout,
        sources,
        codes,
        budget: AtomicU64::new(args.requests.unwrap_or(u64::MAX)),
        deadline: duration.map(|d| Instant::now() + d),
        ok: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
    });
    let progress = Progress::new(args, duration);
    let server_cpu_start = args.server_pid.map(process_cpu_secs).transpose()?;
    let cpu_start = cpu_time::ProcessTime::now();
    let started = Instant::now();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let histogram = runtime.block_on(async {
        let agents: Vec<_> = (0..args.concurrency)
            .map(|agent| tokio::spawn(run_agent(shared.clone(), agent)))
            .collect();
        let ticker = tokio::spawn(tick(shared.clone(), progress.clone(), args.worker));
        let mut histogram = new_histogram();
        for agent in agents {
            if let Ok(h) = agent.await {
                let _ = histogram.add(h);
            }
        }
        ticker.abort();
        histogram
    });
    let took = started.elapsed().as_secs_f64();
    progress.finish();

    let mut report = Report {
        mode: format!("{:?}", args.mode).to_lowercase(),
        op: format!("{:?}", args.op).to_lowercase(),
        concurrency: args.concurrency,
        processes,
        ok: shared.ok.load(Ordering::Relaxed),
        errors: shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        took_secs: took,
        generator_cpu_secs: cpu_start.elapsed().as_secs_f64(),
        ..Report::default()
    };
    finish(&mut report, &histogram, args, server_cpu_start)?;
    if args.worker {
        report.histogram = histogram_pairs(&histogram);
        println!(
            "result {}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        emit(&report, args.json)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn finish(
    report: &mut Report,
    histogram: &Histogram<u64>,
    args: &BenchArgs,
    server_cpu_start: Option<f64>,
) -> Result<(), String> {
    report.per_second = report.ok as f64 / report.took_secs.max(1e-9);
    report.latency_us = Latency::of(histogram);
    if let (Some(pid), Some(start)) = (args.server_pid, server_cpu_start) {
        let cpu = process_cpu_secs(pid)? - start;
        report.server_cpu_secs = Some(cpu);
        report.server_cpu_secs_per_million = Some(cpu * 1e6 / report.ok.max(1) as f64);
    }
    Ok(())
}

fn emit(report: &Report, json: bool) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).map_err(|e| e.to_string())?
        );
    } else {
        report.print();
    }
    Ok(())
}

/// Reads the codes of `export`'s JSON lines.
fn codes_from(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let codes: Vec<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| v.get("code")?.as_str().map(str::to_owned))
        .collect();
    if codes.is_empty() {
        return Err(format!("{}: no codes", path.display()));
    }
    Ok(codes)
}

/// Creates the codes the resolve workloads ask for.
fn seed_codes(server: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let options = Options::default()
        .read_timeout(Some(timeout))
        .connect_timeout(timeout);
    let mut client = Client::connect_with(server, options).map_err(|e| format!("{server}: {e}"))?;
    let urls: Vec<String> = (0..SEED_CODES)
        .map(|i| format!("https://example.com/bench/{i}"))
        .collect();
    client
        .shorten_all(&urls)
        .map_err(|e| format!("creating codes to resolve: {e}"))?
        .into_iter()
        .map(|r| r.map(|short| shorty_client::code_of(&short).to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("creating codes to resolve: {e}"))
}

async fn connect(shared: &Shared, agent: usize) -> std::io::Result<TcpStream> {
    let socket = if shared.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !shared.sources.is_empty() {
        socket.bind(SocketAddr::new(
            shared.sources[agent % shared.sources.len()],
            0,
        ))?;
    }
    let stream = tokio::time::timeout(shared.timeout, socket.connect(shared.addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn io_kind(err: &std::io::Error) -> String {
    format!("{:?}", err.kind())
}

async fn run_agent(shared: Arc<Shared>, agent: usize) -> Histogram<u64> {
    let mut histogram = new_histogram();
    match shared.mode {
        Mode::Connect => connect_agent(&shared, agent, &mut histogram).await,
        Mode::Pipeline => {
            while shared.claim() {
                // A connection lost mid-run is counted and replaced.
                if let Err(kind) = pipeline_agent(&shared, agent, &mut histogram).await {
                    shared.error(kind);
                }
            }
        }
    }
    histogram
}

async fn connect_agent(shared: &Shared, agent: usize, histogram: &mut Histogram<u64>) {
    let mut out = BytesMut::new();
    let mut seq = 0u64;
    while shared.claim() {
        seq += 1;
        let start = Instant::now();
        out.clear();
        let expect = shared.request(agent, seq, &mut out);
        let result = async {
            let mut stream = connect(shared, agent)
                .await
                .map_err(|e| format!("connect {}", io_kind(&e)))?;
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write {}", io_kind(&e)))?;
            let mut buf = BytesMut::with_capacity(256);
            let reply = read_reply(&mut stream, &mut buf).await?;
            check(&reply, expect)
        };
        match tokio::time::timeout(shared.timeout, result).await {
            Ok(Ok(())) => {
                let _ = histogram.record(start.elapsed().as_micros() as u64);
                shared.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(kind)) => shared.error(kind),
            Err(_) => shared.error("timeout"),
        }
    }
}

async fn read_reply(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Reply, String> {
    let decoder = FrameDecoder::new();
    loop {
        match decoder.decode(buf).map_err(|e| format!("protocol {e}"))? {
            Status::Complete(payload) => {
                return Reply::decode_payload(payload).map_err(|e| format!("protocol {e}"))
            }
            Status::Partial { .. } => {
                let n = stream
                    .read_buf(buf)
                    .await
                    .map_err(|e| format!("read {}", io_kind(&e)))?;
                if n == 0 {
                    return Err("closed by server".into());
                }
            }
        }
    }
}

/// One persistent connection; the first request was already claimed.
async fn pipeline_agent(
    shared: &Shared,
    agent: usize,
    histogram: &mut Histogram<u64>,
) -> Result<(), String> {
    let mut stream = connect(shared, agent)
        .await
        .map_err(|e| format!("connect {}", io_kind(&e)))?;
    let decoder = FrameDecoder::new();
    let mut in_flight: VecDeque<(Instant, Expect)> = VecDeque::with_capacity(shared.depth);
    let mut out = BytesMut::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut seq = 0u64;
    let mut claimed = true;
    loop {
        let refill = !shared.burst || in_flight.is_empty();
        while refill && claimed && in_flight.len() < shared.depth {
            seq += 1;
            let expect = shared.request(agent, seq, &mut out);
            in_flight.push_back((Instant::now(), expect));
            claimed = in_flight.len() < shared.depth && shared.claim();
        }
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write {}", io_kind(&e)))?;
            out.clear();
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        let read = tokio::time::timeout(shared.timeout, stream.read_buf(&mut buf)).await;
        match read {
            Err(_) => return Err("timeout".into()),
            Ok(Err(e)) => return Err(format!("read {}", io_kind(&e))),
            Ok(Ok(0)) => return Err("closed by server".into()),
            Ok(Ok(_)) => {}
        }
        while let Status::Complete(payload) = decoder
            .decode(&mut buf)
            .map_err(|e| format!("protocol {e}"))?
        {
            let Some((sent, expect)) = in_flight.pop_front() else {
                return Err("reply without a request".into());
            };
            let reply = Reply::decode_payload(payload).map_err(|e| format!("protocol {e}"))?;
            match check(&reply, expect) {
                Ok(()) => {
                    let _ = histogram.record(sent.elapsed().as_micros() as u64);
                    shared.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(kind) => shared.error(kind),
            }
        }
        if !claimed {
            claimed = shared.claim();
        }
    }
}

/// Per-second rate lines (or worker ticks for the parent process).
async fn tick(shared: Arc<Shared>, progress: Progress, worker: bool) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    let mut last = 0;
    loop {
        interval.tick().await;
        let now = shared.ok.load(Ordering::Relaxed);
        if worker {
            println!("tick {}", now - last);
        } else {
            progress.update(now - last, now);
        }
        last = now;
    }
}

/// Progress output: a bar on a terminal, a plain line per second otherwise.
#[derive(Clone)]
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// The bar counts requests (`--requests`) rather than seconds.
    by_requests: bool,
    unit: &'static str,
    to_stderr: bool,
}

impl Progress {
    fn new(args: &BenchArgs, duration: Option<Duration>) -> Self {
        let unit = if args.mode == Mode::Connect {
            "connections"
        } else {
            "requests"
        };
        let to_stderr = args.json;
        let bar = (!args.worker && std::io::stderr().is_terminal()).then(|| {
            let len = args
                .requests
                .unwrap_or_else(|| duration.map_or(0, |d| d.as_secs()));
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            by_requests: args.requests.is_some(),
            unit,
            to_stderr,
        }
    }

    fn update(&self, last_second: u64, total: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{}/second: {last_second}", self.unit));
                if self.by_requests {
                    bar.set_position(total);
                } else {
                    bar.inc(1);
                }
            }
            None if self.to_stderr => eprintln!("{}/second: {last_second}", self.unit),
            None => println!("{}/second: {last_second}", self.unit),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `processes` copies of this program, each with its share of the
/// agents, and merges their results. They all resolve `codes` (made or
/// read once, before the measured window), handed over in a file.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn run_multi(
    server: &str,
    legacy: bool,
    timeout: Duration,
    args: &BenchArgs,
    processes: usize,
    duration: Option<Duration>,
    sources: &[IpAddr],
    codes: &[String],
) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    // Without it each worker would make its own 1,000 codes: SHORTENs (and
    // fsyncs) inside the server CPU window this run measures, and codes
    // the other processes never ask for.
    let codes_file = if codes.is_empty() {
        None
    } else {
        Some(codes_file(codes).map_err(|e| format!("cannot write the codes for workers: {e}"))?)
    };
    let server_cpu_start = args.server_pid.map(process_cpu_secs).transpose()?;
    let started = Instant::now();
    let total = Arc::new(AtomicU64::new(0));
    let mut children = Vec::new();
    for p in 0..processes {
        let share = args.concurrency / processes + usize::from(p < args.concurrency % processes);
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "--server",
            server,
            "--timeout",
            &humantime::format_duration(timeout).to_string(),
        ]);
        if legacy {
            cmd.arg("--legacy");
        }
        cmd.args(["bench", "--worker", "--processes", "1"]);
        cmd.args([
            "--concurrency",
            &share.to_string(),
            "--depth",
            &args.depth.to_string(),
        ]);
        cmd.args(["--threads", &args.threads.to_string()]);
        if args.burst {
            cmd.arg("--burst");
        }
        cmd.args(["--mode", &format!("{:?}", args.mode).to_lowercase()]);
        cmd.args(["--op", &format!("{:?}", args.op).to_lowercase()]);
        if let Some(file) = &codes_file {
            cmd.arg("--codes").arg(file.path());
        }
        if let Some(n) = args.requests {
            let n = n / processes as u64 + u64::from((p as u64) < n % processes as u64);
            cmd.args(["--requests", &n.to_string()]);
        } else if let Some(d) = duration {
            cmd.args(["--duration", &humantime::format_duration(d).to_string()]);
        }
        if !sources.is_empty() {
            let list: Vec<String> = sources.iter().map(ToString::to_string).collect();
            cmd.args(["--source", &list.join(",")]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start worker process: {e}"))?;
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        let total = total.clone();
        let reader = std::thread::spawn(move || {
            let mut result = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("tick ") {
                    total.fetch_add(n.parse().unwrap_or(0), Ordering::Relaxed);
                } else if let Some(json) = line.strip_prefix("result ") {
                    result = serde_json::from_str::<Report>(json).ok();
                }
            }
            result
        });
        children.push((child, reader));
    }
    let unit = if args.mode == Mode::Connect {
        "connections"
    } else {
        "requests"
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (total, done, json) = (total.clone(), done.clone(), args.json);
        std::thread::spawn(move || {
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let now = total.load(Ordering::Relaxed);
                if json {
                    eprintln!("{unit}/second: {}", now - last);
                } else {
                    println!("{unit}/second: {}", now - last);
                }
                last = now;
            }
        })
    };
    let mut report = Report {
        mode: format!("{:?}", args.mode).to_lowercase(),
        op: format!("{:?}", args.op).to_lowercase(),
        concurrency: args.concurrency,
        processes,
        ..Report::default()
    };
    let mut histogram = new_histogram();
    for (mut child, reader) in children {
        let status = child.wait().map_err(|e| e.to_string())?;
        match reader.join().ok().flatten() {
            Some(part) if status.success() => report.merge(&part, &mut histogram),
            _ => return Err(format!("a worker process failed ({status})")),
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    report.took_secs = started.elapsed().as_secs_f64();
    finish(&mut report, &histogram, args, server_cpu_start)?;
    emit(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `codes` as JSON lines with a "code" field (what `--codes` reads), in a
/// temporary file removed when dropped.
fn codes_file(codes: &[String]) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new()?;
    {
        let mut out = std::io::BufWriter::new(file.as_file_mut());
        for code in codes {
            serde_json::to_writer(&mut out, &serde_json::json!({ "code": code }))?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(file)
}

/// User + system CPU seconds of a process, all threads (Linux).
fn process_cpu_secs(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("--server-pid {pid}: {e} (Linux only)"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are fields 14 and 15 of the whole line.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on every Linux architecture in use.
    Ok((ticks(11) + ticks(12)) as f64 / 100.0)
}
