//! What a benchmark run measured, mergeable across worker processes.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, up to 100 s, 3 significant
/// digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant bounds are valid")
}

/// One process's (or the merged) result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub mode: String,
    pub op: String,
    pub concurrency: usize,
    pub processes: usize,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub took_secs: f64,
    pub per_second: f64,
    pub latency_us: Latency,
    pub generator_cpu_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_secs_per_million: Option<f64>,
    /// `(value, count)` pairs of the latency histogram, for merging.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub histogram: Vec<(u64, u64)>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

pub(crate) fn histogram_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

impl Report {
    /// Folds a worker process's report into this one.
    pub(crate) fn merge(&mut self, other: &Report, histogram: &mut Histogram<u64>) {
        self.ok += other.ok;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.generator_cpu_secs += other.generator_cpu_secs;
        self.took_secs = self.took_secs.max(other.took_secs);
        for &(value, count) in &other.histogram {
            let _ = histogram.record_n(value, count);
        }
    }

    pub(crate) fn print(&self) {
        let unit = if self.mode == "connect" {
            "connections"
        } else {
            "requests"
        };
        println!("took: {:.3} s", self.took_secs);
        println!(
            "{unit}: {} ok, {} errors ({} agents, {} process{})",
            self.ok,
            self.errors.values().sum::<u64>(),
            self.concurrency,
            self.processes,
            if self.processes == 1 { "" } else { "es" }
        );
        println!("rate: {:.0} {unit}/second", self.per_second);
        for (kind, n) in &self.errors {
            println!("  error {kind}: {n}");
        }
        let l = &self.latency_us;
        println!(
            "latency: p50 {} p90 {} p99 {} p99.9 {} max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
        println!(
            "generator CPU: {:.2} s ({:.2} cores)",
            self.generator_cpu_secs,
            self.generator_cpu_secs / self.took_secs.max(1e-9)
        );
        if let (Some(cpu), Some(per_m)) = (self.server_cpu_secs, self.server_cpu_secs_per_million) {
            println!(
                "server CPU: {cpu:.2} s ({:.2} cores), {per_m:.1} s per million {unit}",
                cpu / self.took_secs.max(1e-9)
            );
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}
