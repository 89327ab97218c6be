//! Prometheus metrics of the edge: requests by service and status, and their latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (service, status) → count.
    requests: BTreeMap<(String, u16), u64>,
    /// service → histogram.
    latency: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Count per bucket (not cumulative), plus one for +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Metrics {
    pub fn record(&self, service: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut inner = self.inner.lock();
        *inner
            .requests
            .entry((service.to_owned(), status))
            .or_default() += 1;
        let histogram = inner.latency.entry(service.to_owned()).or_default();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        histogram.counts[bucket] += 1;
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, online_users: u64) -> String {
        let inner = self.inner.lock();
        let mut out = String::new();
        out.push_str(
            "# HELP agora_gateway_requests_total Requests answered, by service and status.\n",
        );
        out.push_str("# TYPE agora_gateway_requests_total counter\n");
        for ((service, status), count) in &inner.requests {
            let _ = writeln!(
                out,
                "agora_gateway_requests_total{{service=\"{service}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP agora_gateway_request_duration_seconds Time to answer, by service.\n");
        out.push_str("# TYPE agora_gateway_request_duration_seconds histogram\n");
        for (service, histogram) in &inner.latency {
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "agora_gateway_request_duration_seconds_bucket{{service=\"{service}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "agora_gateway_request_duration_seconds_bucket{{service=\"{service}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "agora_gateway_request_duration_seconds_sum{{service=\"{service}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "agora_gateway_request_duration_seconds_count{{service=\"{service}\"}} {}",
                histogram.count
            );
        }
        out.push_str("# HELP agora_online_users Users signed in with an unexpired token.\n");
        out.push_str("# TYPE agora_online_users gauge\n");
        let _ = writeln!(out, "agora_online_users {online_users}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.record("identity", 201, Duration::from_millis(3));
        metrics.record("identity", 201, Duration::from_millis(30));
        metrics.record("identity", 422, Duration::from_secs(20));
        let text = metrics.render(7);
        assert!(
            text.contains("agora_gateway_requests_total{service=\"identity\",status=\"201\"} 2")
        );
        assert!(
            text.contains("agora_gateway_requests_total{service=\"identity\",status=\"422\"} 1")
        );
        assert!(text.contains(
            "agora_gateway_request_duration_seconds_bucket{service=\"identity\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "agora_gateway_request_duration_seconds_bucket{service=\"identity\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "agora_gateway_request_duration_seconds_bucket{service=\"identity\",le=\"10\"} 2"
        ));
        assert!(text.contains(
            "agora_gateway_request_duration_seconds_bucket{service=\"identity\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("agora_online_users 7"));
    }
}
