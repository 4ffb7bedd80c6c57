//! Process scaffolding both backends share: the CLI and tools, the data
//! directory, listeners, signals, systemd notification, and the
//! thread-per-core launcher. Blocking `std` code run once at start.
//!
//! A backend's `main` is one call to [`run`] with a function that serves
//! one core: it receives that core's [`Worker`], builds its runtime, wraps
//! the listeners and files in its own types and calls
//! [`crate::driver::core::run_core`].

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use shorty_service::codes::{Codec, IdSpace};
use shorty_service::keydir::KeyDir;
use shorty_service::log::segments::SegmentTable;
use shorty_service::shard::{LocalStore, Shared, StoreMode};

use crate::admin::Admin;
use crate::config::{self, ServeArgs, Tool};
use crate::datadir::{self, DataDir};
use crate::listen::bind_listeners;
use crate::slots::ConnectionSlots;

pub use crate::driver::context::{
    fatal, shutdown_channel, CoreContext, ShutdownSignal, ShutdownTrigger,
};

/// A core's listeners, bound by the scaffolding (`SO_REUSEPORT`,
/// non-blocking, the kernel's `somaxconn` backlog).
#[derive(Debug)]
pub struct Listeners {
    /// The framed protocol.
    pub framed: TcpListener,
    /// The HTTP front, unless `--http off`.
    pub http: Option<TcpListener>,
    /// The admin listener: core 0 only, unless `--admin off`.
    pub admin: Option<TcpListener>,
}

/// What one core's worker gets.
#[derive(Debug)]
pub struct Worker {
    /// What the driver needs.
    pub context: CoreContext,
    /// Its listeners.
    pub listeners: Listeners,
    /// `--uring-defer-taskrun`: shorty-uring sets its ring up with
    /// `DEFER_TASKRUN` (other backends ignore it).
    pub defer_taskrun: bool,
    /// `--uring-multishot-recv`: shorty-uring receives with one multishot
    /// receive per connection (other backends ignore it).
    pub multishot_recv: bool,
    /// `--uring-multishot-accept`: shorty-uring accepts with one multishot
    /// accept per listener (other backends ignore it).
    pub multishot_accept: bool,
    /// `--glommio-multishot-accept`: shorty-glommio accepts with one
    /// multishot accept per listener (other backends ignore it).
    pub glommio_multishot_accept: bool,
}

fn install_panic_hook() {
    // A panic anywhere stops the whole process: a core left half-dead
    // (tokio-uring swallows the panics of spawned tasks) could hold
    // acknowledgements forever. The release profile also sets
    // `panic = "abort"`; this covers every build.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}

/// Triggers shutdown on the first SIGTERM or SIGINT; a second one exits at
/// once (status 130), for an operator who does not want to wait.
fn install_signal_handlers(trigger: ShutdownTrigger) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("shorty-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    tracing::warn!(signal, "second signal: exiting without draining");
                    let held = crate::stats::HELD_BACK_LINKS.load(Ordering::Relaxed);
                    if held > 0 {
                        // The writer's own report comes only after its
                        // retries, which this exit does not wait for.
                        tracing::error!(
                            "exiting with the click counts of {held} links that the store \
                             refused: they are lost"
                        );
                    }
                    std::process::exit(130);
                }
                tracing::info!(
                    signal,
                    "shutting down: no new connections, draining in-flight requests"
                );
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                trigger.trigger();
            }
        })?;
    Ok(())
}

/// Without `--blocklist` nothing is re-read on SIGHUP, but the signal
/// must not kill the server either: its default action is to terminate,
/// and operators (and tools such as logrotate) send it to any daemon
/// expecting a reload (review 8: a server without a blocklist died on it,
/// with no clean stop and no log line).
fn absorb_sighup() -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    std::thread::Builder::new()
        .name("shorty-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                tracing::info!("SIGHUP: nothing to reload (no --blocklist)");
            }
        })
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    Ok(())
}

/// Pings systemd's watchdog while every core's heartbeat advances.
fn start_watchdog(heartbeats: Vec<Arc<AtomicU64>>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("shorty-watchdog".into())
        .spawn(move || {
            let beats = || -> Vec<u64> {
                heartbeats
                    .iter()
                    .map(|h| h.load(Ordering::Relaxed))
                    .collect()
            };
            let mut last = beats();
            loop {
                std::thread::sleep(interval / 2);
                let now = beats();
                // A core whose timer task has not ticked is stuck: stop
                // pinging and let systemd restart the process.
                if now.iter().zip(&last).all(|(n, l)| n > l) {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                last = now;
            }
        });
}

/// The whole `main` of a backend.
pub fn run<F>(backend: &'static str, serve: F) -> ExitCode
where
    F: Fn(Worker) -> io::Result<()> + Send + Sync + 'static,
{
    install_panic_hook();
    let cli = match config::parse(backend, std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("{backend}: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Tool::Verify { data_dir }) => return crate::tools::verify(&data_dir),
        Some(Tool::Merge {
            data_dir,
            merge_threshold,
            merge_rate,
            alias_quarantine,
        }) => {
            return crate::merge::offline(&data_dir, merge_threshold, merge_rate, alias_quarantine)
        }
        Some(Tool::Export {
            data_dir,
            file,
            store,
        }) => {
            return match store {
                Some(config::StoreSpec::Redis(spec)) => {
                    crate::tools::export_redis(&spec, file.as_deref())
                }
                _ => crate::tools::export(&data_dir, file.as_deref()),
            }
        }
        Some(Tool::Import {
            data_dir,
            file,
            store,
            public_url,
        }) => {
            return match store {
                Some(config::StoreSpec::Redis(spec)) => {
                    crate::tools::import_redis(&spec, &file, public_url.as_ref())
                }
                _ => crate::tools::import(&data_dir, &file, public_url.as_ref()),
            }
        }
        Some(Tool::Stats {
            data_dir,
            from,
            to,
            granularity,
            code,
        }) => return crate::stats::tool(&data_dir, &code, from, to, granularity),
        Some(Tool::Keys {
            data_dir,
            store,
            action,
        }) => return crate::keys::run(&data_dir, store.as_ref(), &action),
        Some(Tool::DisableDestination(a)) => {
            return crate::disable::run(
                &a.data_dir,
                a.store.as_ref(),
                &a.rules,
                a.blocklist.as_deref(),
                &a.server,
                a.api_key.as_deref(),
            )
        }
        None => {}
    }
    let args = cli.serve;
    if let Err(err) = args.check() {
        eprintln!("{backend}: {err}");
        return ExitCode::FAILURE;
    }
    crate::logging::init(&args.log_level, args.log_format);
    match start(backend, args, serve) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{backend} cannot start: {err}");
            ExitCode::FAILURE
        }
    }
}

fn start<F>(backend: &'static str, args: ServeArgs, serve: F) -> Result<ExitCode, String>
where
    F: Fn(Worker) -> io::Result<()> + Send + Sync + 'static,
{
    let threads = args.threads();
    // Client sockets are kept within what the open-file limit leaves beside
    // the process's own files (`slots::socket_budget`).
    let (budget, read_handles) = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let budget = crate::slots::socket_budget(limit, threads);
            if budget < args.max_connections as usize {
                tracing::warn!(
                    limit,
                    max_connections = args.max_connections,
                    sockets = budget,
                    "the open-file limit leaves room for fewer client sockets than \
                     --max-connections; clients beyond it are closed at once. Raise it \
                     (LimitNOFILE= in a systemd unit)"
                );
            }
            (budget, crate::slots::read_handles(limit, threads))
        }
        Err(err) => {
            tracing::warn!("could not raise the open-file limit: {err}");
            (usize::MAX, crate::driver::FileCache::<()>::CAPACITY)
        }
    };
    // Refuse an address another process serves before the (possibly long)
    // recovery; the listeners themselves are bound after it.
    for (what, addr) in [
        ("the framed protocol", Some(args.listen)),
        ("HTTP", args.http.0),
        ("the admin listener", args.admin.0),
    ] {
        if let Some(addr) = addr {
            crate::listen::check_free(what, addr).map_err(|e| e.to_string())?;
        }
    }
    let health = Arc::new(shorty_service::health::Health::new(threads));
    // The Redis stats writer's marker, shared with the store thread's
    // statistics reads (see `stats_redis`).
    let stats_marker = match (&args.store, args.stats) {
        (config::StoreSpec::Redis(_), config::OnOff::On) => Some(
            crate::stats_redis::Marker::random()
                .map_err(|e| format!("cannot make the stats writer's marker: {e}"))?,
        ),
        _ => None,
    };
    let (key, store, mut remote_ports, local) = match &args.store {
        config::StoreSpec::Local => {
            // The data directory first: locked before anything in it is
            // read or created.
            let data = DataDir::open(&args.data_dir).map_err(|e| e.to_string())?;
            let key = data.load_or_create_key().map_err(|e| e.to_string())?;
            let keydir = Arc::new(KeyDir::new());
            let segments = Arc::new(SegmentTable::new(data.path(), 0));
            // Recovery may outlast the unit's TimeoutStartSec=.
            let extender = crate::notify::StartExtender::start();
            let report = datadir::recover(data.path(), &segments, &keydir, threads)
                .map_err(|e| e.to_string())?;
            drop(extender);
            tracing::info!(
                links = report.links,
                segments = report.segments,
                from_hints = report.from_hints,
                sealed_now = report.sealed_now,
                cut = report.cuts.len(),
                elapsed_ms = report.elapsed.as_millis() as u64,
                keydir_bytes = keydir.memory_bytes(),
                data_dir = %data.path().display(),
                "recovered the log"
            );
            let store = StoreMode::Local(LocalStore {
                keydir: keydir.clone(),
                segments,
                ids: Arc::new(IdSpace::new(report.next_id)),
            });
            (key, store, None, Some((data, report)))
        }
        config::StoreSpec::Redis(spec) => {
            let thread = crate::redis_store::start(
                crate::redis_store::StoreSettings {
                    spec: spec.clone(),
                    replicas: args.store_replicas,
                    timeout: args.store_timeout,
                    read_from_replicas: args.store_read_replicas,
                    stats_marker: stats_marker.clone(),
                },
                threads,
                health.clone(),
            )?;
            tracing::info!(store = %spec.nodes.join(","), "connected to the store");
            (
                thread.key,
                StoreMode::Remote,
                Some(thread.ports.into_iter()),
                None,
            )
        }
    };

    let framed = bind_listeners(
        "the framed protocol",
        args.listen,
        threads,
        args.defer_accept,
    )
    .map_err(|e| e.to_string())?;
    let http = match args.http.0 {
        Some(addr) => Some(
            bind_listeners("HTTP", addr, threads, args.defer_accept).map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    // The admin listener accepts at once: its clients are the operator's
    // probes and scrapers, few, and some only connect.
    let mut admin = match args.admin.0 {
        Some(addr) => Some(
            bind_listeners("the admin listener", addr, 1, std::time::Duration::ZERO)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let http_bound: Option<SocketAddr> = http
        .as_ref()
        .and_then(|l| l.first())
        .and_then(|l| l.local_addr().ok());
    let settings = args.settings(args.public_url(http_bound));
    let limits =
        shorty_service::limits::Limits::new(&args.limit_settings(), std::time::Instant::now());
    // Click limits' counts outlive the process with the local log (with
    // a Redis store each node counts in memory).
    let (clicks, click_saver) = match &local {
        Some((data, _)) => {
            let (clicks, saver) = crate::click_limits::start(data.path(), args.stats_flush)
                .map_err(|e| format!("cannot open the click limits' store: {e}"))?;
            (Some(clicks), Some(saver))
        }
        None => (None, None),
    };
    let mut shared = Shared::new(settings, Codec::new(&key), store, threads)
        .with_health(health)
        .with_limits(limits);
    if let Some(clicks) = clicks {
        shared = shared.with_clicks(clicks);
    }
    let shared = Arc::new(shared);
    crate::keys::start_reloader(
        crate::keys::KeyStore::open(&args.data_dir, &args.store)?,
        &shared,
    )?;
    if let Some(path) = &args.blocklist {
        crate::blocklist::start(path, &shared)?;
    } else {
        absorb_sighup()?;
    }
    if shared.settings.auth_required && shared.keys.current().is_empty() {
        tracing::warn!(
            "--auth required and no API key exists: every write will be refused \
             (`keys create --name NAME --scopes links:write`)"
        );
    }
    let damaged = Arc::new(AtomicU64::new(0));
    let merge_metrics = Arc::new(shorty_service::metrics::MergeMetrics::default());
    let _ = shared.admin.set(Box::new(
        Admin::new(&shared, damaged.clone()).with_merge(merge_metrics.clone()),
    ));
    let (hints, hint_writer) = match &local {
        Some((data, report)) => {
            datadir::spawn_scrubber(data.path(), report.hinted.clone(), damaged);
            if let StoreMode::Local(store) = &shared.store {
                // Made now, so that an export without write access (another
                // user, a read-only mount) can still take its lock.
                crate::merge::readers_file(data.path())
                    .map_err(|e| format!("cannot create {}: {e}", crate::merge::READERS_FILE))?;
                // The merge thread; SIGUSR1 asks it to check at once.
                let trigger = Arc::new(std::sync::atomic::AtomicBool::new(false));
                signal_hook::flag::register(signal_hook::consts::SIGUSR1, trigger.clone())
                    .map_err(|e| format!("cannot install the SIGUSR1 handler: {e}"))?;
                crate::merge::spawn_merger(
                    store.segments.clone(),
                    store.keydir.clone(),
                    crate::merge::MergeSettings {
                        threshold: args.merge_threshold,
                        rate: args.merge_rate,
                        interval: args.merge_interval,
                        segment_bytes: args.segment_bytes,
                        grace: crate::merge::grace(args.store_timeout),
                        forget: Some(crate::merge::ForgetSource {
                            codec: shared.codec.clone(),
                            ids: store.ids.clone(),
                            quarantine: args.alias_quarantine,
                        }),
                        nice: args.merge_nice,
                    },
                    merge_metrics.clone(),
                    trigger,
                )
                .map_err(|e| format!("cannot start the merge thread: {e}"))?;
            }
            // The hint writer's thread also keeps `STATE` ahead of the ids
            // and segment numbers the cores hand out.
            let keeper = match &shared.store {
                StoreMode::Local(store) => Some(datadir::StateKeeper::new(
                    data.path(),
                    report.high_water,
                    store.ids.clone(),
                    store.segments.clone(),
                )),
                StoreMode::Remote => None,
            };
            let (hints, writer) = datadir::spawn_hint_writer(data.path(), keeper)
                .map_err(|e| format!("cannot start the hint writer: {e}"))?;
            (Some(hints), Some(writer))
        }
        None => (None, None),
    };
    // Click statistics: a writer thread over DATA_DIR/stats, or over the
    // Redis store.
    if args.stats == config::OnOff::On {
        shorty_service::stats::BotDetector::warm();
    }
    let stats_writer = match (&local, args.stats) {
        (Some((data, _)), config::OnOff::On) => {
            let db = crate::stats::StatsDb::open(&data.path().join("stats"))
                .map_err(|e| format!("cannot open the click statistics store: {e}"))?;
            let db = Arc::new(db);
            let _ = shared.stats.set(crate::stats::reader(db.clone()));
            let (sender, writer) = crate::stats::spawn_writer(db)
                .map_err(|e| format!("cannot start the stats writer: {e}"))?;
            Some((sender, writer))
        }
        (None, config::OnOff::On) => match &args.store {
            config::StoreSpec::Redis(spec) => {
                let sink =
                    crate::stats_redis::RedisStats::connect(spec, args.store_timeout, stats_marker)
                        .map_err(|e| {
                            format!("cannot connect the stats writer to the store: {e}")
                        })?;
                // No reader is set: a core asks the store thread for
                // statistics (`RemoteRequest::Stats`) and never waits on
                // the store.
                let (sender, writer) = crate::stats::spawn_writer(sink)
                    .map_err(|e| format!("cannot start the stats writer: {e}"))?;
                Some((sender, writer))
            }
            config::StoreSpec::Local => None,
        },
        _ => None,
    };
    let (trigger, shutdown) = shutdown_channel();
    install_signal_handlers(trigger.clone())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let slots = Arc::new(
        ConnectionSlots::with_per_ip(
            args.max_connections as usize,
            args.max_connections_per_ip as usize,
        )
        .with_socket_budget(budget),
    );
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let serve = Arc::new(serve);
    let (started_tx, started_rx) = mpsc::channel();
    let mut heartbeats = Vec::new();
    let mut handles = Vec::with_capacity(threads);
    let mut http = http.map(|l| l.into_iter());
    let mut addresses = Vec::new();
    for (index, framed) in framed.into_iter().enumerate() {
        let http = http.as_mut().and_then(Iterator::next);
        let admin = if index == 0 {
            admin.take().and_then(|mut l| l.pop())
        } else {
            None
        };
        if index == 0 {
            addresses.push(("shorty", framed.local_addr().ok()));
            addresses.push(("http", http.as_ref().and_then(|l| l.local_addr().ok())));
            addresses.push(("admin", admin.as_ref().and_then(|l| l.local_addr().ok())));
        }
        let heartbeat = Arc::new(AtomicU64::new(0));
        heartbeats.push(heartbeat.clone());
        let worker = Worker {
            context: CoreContext {
                index,
                shared: shared.clone(),
                slots: slots.clone(),
                queue_timeout: args.queue_timeout,
                read_handles,
                shutdown_timeout: args.shutdown_timeout,
                hints: hints.clone(),
                remote: remote_ports.as_mut().and_then(Iterator::next),
                stats: stats_writer
                    .as_ref()
                    .map(|(sender, _)| crate::stats::CoreStats {
                        sender: sender.clone(),
                        flush: args.stats_flush,
                    }),
                heartbeat,
                shutdown: shutdown.clone(),
                started: started_tx.clone(),
            },
            listeners: Listeners {
                framed,
                http,
                admin,
            },
            defer_taskrun: args.uring_defer_taskrun,
            multishot_recv: args.uring_multishot_recv,
            multishot_accept: args.uring_multishot_accept,
            glommio_multishot_accept: args.glommio_multishot_accept,
        };
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let (serve, trigger) = (serve.clone(), trigger.clone());
        let handle = std::thread::Builder::new()
            .name(format!("shorty-core-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let result = serve(worker);
                if result.is_err() {
                    // Fail fast: a server quietly running on fewer cores
                    // than asked for is worse than one that stops and says
                    // why.
                    trigger.trigger();
                }
                result
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(handle);
    }
    drop(started_tx);
    // Only once every core's runtime is up does the server say it listens
    // (a core that cannot start says why first, and the process stops).
    let mut up = 0;
    while up < threads {
        match started_rx.recv() {
            Ok(_) => up += 1,
            Err(_) => break,
        }
    }
    let all_up = up == threads;
    if all_up {
        for (protocol, addr) in &addresses {
            if let Some(addr) = addr {
                tracing::info!(backend, threads, protocol = *protocol, %addr, "listening");
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        start_watchdog(heartbeats);
    }
    let mut failed = !all_up;
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(core = index, "{backend} cannot run this core: {err}");
                failed = true;
            }
            Err(_) => {
                tracing::error!(core = index, "worker panicked");
                failed = true;
            }
        }
    }
    // Every sealed segment gets its hint before the process exits.
    if let (Some(hints), Some(writer)) = (hints, hint_writer) {
        hints.finish();
        let _ = writer.join();
    }
    // Every limited link's count is saved before the process exits.
    if let Some(saver) = click_saver {
        saver.finish();
    }
    // Every core's last clicks are written before the process exits.
    if let Some((sender, writer)) = stats_writer {
        sender.finish();
        drop(sender);
        let _ = writer.join();
    }
    tracing::info!(links = shared.keydir().map(KeyDir::len), "stopped");
    drop(local);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
