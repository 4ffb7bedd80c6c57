//! `/metrics` for the admin listener: every core's counters summed at
//! scrape time, the key directory's size, and the usual process metrics,
//! in the Prometheus/OpenMetrics text format (`prometheus-client`).

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Weak};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shorty_service::metrics::{Snapshot, BATCH_BUCKETS, FSYNC_BUCKETS, LISTENERS};
use shorty_service::shard::{AdminView, Shared};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    op: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLabels {}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClickLabels {
    kind: &'static str,
}

/// A histogram whose buckets the cores counted themselves.
#[derive(Debug)]
struct Bucketed {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl EncodeMetric for Bucketed {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabels>(self.sum, self.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Renders the metrics of one process.
pub struct Admin {
    shared: Weak<Shared>,
    start_time: f64,
    damaged: Arc<AtomicU64>,
    merge: Option<Arc<shorty_service::metrics::MergeMetrics>>,
}

impl Admin {
    /// Metrics of the process `shared` belongs to.
    pub fn new(shared: &Arc<Shared>, damaged: Arc<AtomicU64>) -> Self {
        Self {
            damaged,
            merge: None,
            shared: Arc::downgrade(shared),
            start_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// Also renders the merge thread's metrics.
    #[must_use]
    pub fn with_merge(mut self, merge: Arc<shorty_service::metrics::MergeMetrics>) -> Self {
        self.merge = Some(merge);
        self
    }

    fn render(&self, shared: &Shared) -> String {
        let snap = Snapshot::of(shared.metrics.iter());
        let mut registry = Registry::default();

        let requests = Family::<RequestLabels, Counter>::default();
        for ((protocol, op, result), n) in &snap.requests {
            requests
                .get_or_create(&RequestLabels {
                    protocol,
                    op,
                    result,
                })
                .inc_by(*n);
        }
        registry.register(
            "shorty_requests",
            "Requests answered, by protocol, operation and result (ok or the error code or HTTP status)",
            requests,
        );
        let open = Family::<ListenerLabels, Gauge<i64, AtomicI64>>::default();
        let total = Family::<ListenerLabels, Counter<u64, AtomicU64>>::default();
        for (i, protocol) in LISTENERS.iter().enumerate() {
            let labels = ListenerLabels { protocol };
            open.get_or_create(&labels)
                .set(snap.connections_open[i] as i64);
            total
                .get_or_create(&labels)
                .inc_by(snap.connections_total[i]);
        }
        registry.register(
            "shorty_connections_open",
            "Connections open, by listener",
            open,
        );
        registry.register(
            "shorty_connections",
            "Connections accepted, by listener",
            total,
        );
        let (counts, sum, count) = snap.fsync;
        registry.register(
            "shorty_log_fsync_seconds",
            "Time to write and fdatasync one group-commit batch",
            Bucketed {
                bounds: FSYNC_BUCKETS.to_vec(),
                counts,
                sum,
                count,
            },
        );
        let (counts, sum, count) = snap.batch;
        registry.register(
            "shorty_log_batch_records",
            "Links per group-commit batch",
            Bucketed {
                bounds: BATCH_BUCKETS.to_vec(),
                counts,
                sum,
                count,
            },
        );
        if let Some(keydir) = shared.keydir() {
            registry.register(
                "shorty_links",
                "Codes held in this server's key directory: links, and deleted links' \
                 tombstones until a merge drops them",
                ConstGauge::new(keydir.len() as i64),
            );
            registry.register(
                "shorty_keydir_bytes",
                "Memory held by the key directory",
                ConstGauge::new(keydir.memory_bytes() as i64),
            );
        }
        registry.register(
            "shorty_cache_hits",
            "URL lookups answered from a core's cache",
            ConstCounter::new(snap.cache.0),
        );
        registry.register(
            "shorty_cache_misses",
            "URL lookups the cache could not answer",
            ConstCounter::new(snap.cache.1),
        );
        registry.register(
            "shorty_url_reads",
            "URLs read from the log",
            ConstCounter::new(snap.url_reads),
        );
        // One process-level series per kind: never a label per link.
        let clicks = Family::<ClickLabels, Counter<u64, AtomicU64>>::default();
        for (i, kind) in ["human", "bot"].into_iter().enumerate() {
            clicks
                .get_or_create(&ClickLabels { kind })
                .inc_by(snap.clicks[i]);
        }
        registry.register(
            "shorty_clicks",
            "Redirects answered to a GET (clicks), by kind of user agent",
            clicks,
        );
        registry.register(
            "shorty_log_damaged_segments",
            "Sealed segments the scrub after start found damaged (see the log; run verify)",
            ConstGauge::new(self.damaged.load(std::sync::atomic::Ordering::Relaxed) as i64),
        );
        if let Some(merge) = &self.merge {
            let load = |a: &AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            registry.register(
                "shorty_log_dead_bytes",
                "Bytes of sealed segments a merge would give back, at the merge thread's last check",
                ConstGauge::new(load(&merge.dead_bytes) as i64),
            );
            registry.register(
                "shorty_log_merges",
                "Merges (compactions) of the log completed",
                ConstCounter::new(load(&merge.merges)),
            );
            registry.register(
                "shorty_log_merge_reclaimed_bytes",
                "Bytes of log the merges gave back",
                ConstCounter::new(load(&merge.reclaimed_bytes)),
            );
            registry.register(
                "shorty_log_merge_read_bytes",
                "Bytes the merge thread read (segments merged, hints, each sealed segment once)",
                ConstCounter::new(load(&merge.read_bytes)),
            );
        }
        registry.register(
            "shorty_ready",
            "1 when the server can take new links, 0 when not (see /readyz)",
            ConstGauge::new(i64::from(shared.health.problem().is_none())),
        );
        if let Ok(me) = procfs::process::Process::myself() {
            if let Ok(stat) = me.stat() {
                let tps = procfs::ticks_per_second() as f64;
                registry.register(
                    "process_cpu_seconds",
                    "User and system CPU time",
                    ConstCounter::new((stat.utime + stat.stime) as f64 / tps),
                );
                let page = procfs::page_size();
                registry.register(
                    "process_resident_memory_bytes",
                    "Resident memory",
                    ConstGauge::new(stat.rss as i64 * page as i64),
                );
            }
            if let Ok(fds) = me.fd_count() {
                registry.register(
                    "process_open_fds",
                    "Open file descriptors",
                    ConstGauge::new(fds as i64),
                );
            }
        }
        registry.register(
            "process_start_time_seconds",
            "Start time, seconds since the epoch",
            ConstGauge::new(self.start_time),
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl AdminView for Admin {
    fn metrics_text(&self) -> String {
        self.shared
            .upgrade()
            .map(|shared| self.render(&shared))
            .unwrap_or_default()
    }
}
