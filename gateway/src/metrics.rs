//! Gateway metrics in the Prometheus text format: requests by method and status, bytes sent, time to the
//! response head, and whether a request needed the network ("cache hits" are requests served from local
//! blocks alone). Plain atomics: recording is a few relaxed adds, rendering happens on scrape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];
/// Status codes counted one by one; anything else is counted as "other".
const STATUSES: [u16; 14] = [200, 206, 301, 304, 400, 404, 405, 406, 412, 416, 429, 500, 502, 504];

/// Counters shared by every request of one gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    get: [AtomicU64; STATUSES.len() + 1],
    head: [AtomicU64; STATUSES.len() + 1],
    body_bytes: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    local_hits: AtomicU64,
    network_fetches: AtomicU64,
    rejected_busy: AtomicU64,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a response head: its method, status and the time since the request arrived.
    pub fn record_response(&self, head: bool, status: u16, elapsed: Duration) {
        let slot = STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len());
        let counters = if head { &self.head } else { &self.get };
        counters[slot].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_micros.fetch_add(elapsed.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    /// Counts body bytes as they are handed to the connection.
    pub fn record_bytes(&self, n: usize) {
        self.body_bytes.fetch_add(n as u64, Relaxed);
    }

    /// Counts a request whose blocks were all local (true) or that needed the network (false).
    pub fn record_origin(&self, local: bool) {
        if local { &self.local_hits } else { &self.network_fetches }.fetch_add(1, Relaxed);
    }

    pub fn record_busy(&self) {
        self.rejected_busy.fetch_add(1, Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP btfs_gateway_requests_total Gateway responses by method and status code.\n");
        out.push_str("# TYPE btfs_gateway_requests_total counter\n");
        for (method, counters) in [("GET", &self.get), ("HEAD", &self.head)] {
            for (i, c) in counters.iter().enumerate() {
                let code = STATUSES.get(i).map_or("other".to_string(), u16::to_string);
                let _ = writeln!(
                    out,
                    "btfs_gateway_requests_total{{method=\"{method}\",code=\"{code}\"}} {}",
                    c.load(Relaxed)
                );
            }
        }
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        };
        counter(&mut out, "btfs_gateway_response_bytes_total", "Body bytes sent.", &self.body_bytes);
        counter(
            &mut out,
            "btfs_gateway_cache_hits_total",
            "Requests served from local blocks alone.",
            &self.local_hits,
        );
        counter(
            &mut out,
            "btfs_gateway_network_fetches_total",
            "Requests that fetched at least one block from the network.",
            &self.network_fetches,
        );
        counter(
            &mut out,
            "btfs_gateway_rejected_busy_total",
            "Requests refused with 429 at the concurrency limit.",
            &self.rejected_busy,
        );
        let name = "btfs_gateway_response_head_seconds";
        let _ = writeln!(out, "# HELP {name} Time from request to response head.\n# TYPE {name} histogram");
        for (bound, c) in BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", c.load(Relaxed));
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.latency_sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.record_response(false, 200, Duration::from_millis(2));
        m.record_response(true, 418, Duration::from_secs(100));
        m.record_bytes(1234);
        m.record_origin(true);
        let text = m.render();
        assert!(text.contains("btfs_gateway_requests_total{method=\"GET\",code=\"200\"} 1"));
        assert!(text.contains("btfs_gateway_requests_total{method=\"HEAD\",code=\"other\"} 1"));
        assert!(text.contains("btfs_gateway_response_bytes_total 1234"));
        assert!(text.contains("btfs_gateway_cache_hits_total 1"));
        assert!(text.contains("btfs_gateway_response_head_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("btfs_gateway_response_head_seconds_bucket{le=\"+Inf\"} 2"));
    }
}
