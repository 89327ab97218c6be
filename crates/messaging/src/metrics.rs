//! The gauges a store and the bus hold, sampled when `/metrics` is scraped (see
//! `agora_telemetry::register_sampler`): outbox backlog, process-manager instances and
//! overdue timers, and each consumer's lag. Counters and latencies are recorded where
//! they happen (the subscriber, the relay).

use agora_bus::SharedBus;
use agora_telemetry::names;
use sqlx::Row;

use crate::{Db, Outbox};

/// Sets `service`'s outbox backlog and, if its store runs process managers, their
/// instances by status and overdue timers. A failed query leaves its gauge as it was.
pub async fn sample_store(db: &Db, service: &'static str, processes: bool) {
    match Outbox::new(db).unpublished().await {
        Ok(backlog) => {
            metrics::gauge!(names::OUTBOX_BACKLOG, "service" => service).set(backlog as f64)
        }
        Err(error) => tracing::debug!(%error, service, "outbox backlog unknown"),
    }
    if !processes {
        return;
    }
    let counts = sqlx::query(
        "SELECT process, status, COUNT(*) AS n FROM process_instances GROUP BY process, status",
    )
    .fetch_all(db.pool())
    .await;
    let overdue = sqlx::query(
        "SELECT process, COUNT(*) AS n FROM process_instances
         WHERE status = 'active' AND timeout_at_ms IS NOT NULL AND timeout_at_ms <= $1
         GROUP BY process",
    )
    .bind(crate::now_ms())
    .fetch_all(db.pool())
    .await;
    let mut seen = Vec::new();
    match counts {
        Ok(rows) => {
            for row in rows {
                let (Ok(process), Ok(status), Ok(n)) = (
                    row.try_get::<String, _>("process"),
                    row.try_get::<String, _>("status"),
                    row.try_get::<i64, _>("n"),
                ) else {
                    continue;
                };
                seen.push((process.clone(), status.clone()));
                metrics::gauge!(names::PROCESS_INSTANCES,
                    "service" => service, "process" => process, "status" => status)
                .set(n as f64);
            }
            // A status with no instance left reads 0, not its last count.
            for status in ["active", "terminal"] {
                let processes: Vec<String> = seen.iter().map(|(p, _)| p.clone()).collect();
                for process in processes {
                    if !seen.iter().any(|(p, s)| *p == process && s == status) {
                        metrics::gauge!(names::PROCESS_INSTANCES,
                            "service" => service, "process" => process, "status" => status)
                        .set(0.0);
                    }
                }
            }
        }
        Err(error) => tracing::debug!(%error, service, "process instances unknown"),
    }
    match overdue {
        Ok(rows) => {
            let due: Vec<(String, i64)> = rows
                .iter()
                .filter_map(|row| Some((row.try_get("process").ok()?, row.try_get("n").ok()?)))
                .collect();
            let mut processes: Vec<String> = seen.into_iter().map(|(p, _)| p).collect();
            processes.extend(due.iter().map(|(p, _)| p.clone()));
            processes.sort_unstable();
            processes.dedup();
            // Every process reads its count, 0 when nothing is due.
            for process in processes {
                let n = due
                    .iter()
                    .find(|(p, _)| *p == process)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!(names::PROCESS_OVERDUE_TIMERS, "service" => service, "process" => process)
                    .set(n as f64);
            }
        }
        Err(error) => tracing::debug!(%error, service, "overdue timers unknown"),
    }
}

/// Sets the lag, unacked and dead-letter gauges of the bus's consumers that belong to
/// `service` (consumers are named `<service>-<what>`).
pub async fn sample_consumers(bus: &SharedBus, service: &'static str) {
    let consumers = match bus.consumers().await {
        Ok(consumers) => consumers,
        Err(error) => {
            tracing::debug!(%error, service, "consumers unknown");
            return;
        }
    };
    for consumer in consumers {
        if agora_telemetry::service_of_consumer(&consumer.name) != service {
            continue;
        }
        let labels = [("service", service.to_owned()), ("consumer", consumer.name)];
        metrics::gauge!(names::CONSUMER_PENDING, &labels).set(consumer.pending as f64);
        metrics::gauge!(names::CONSUMER_ACK_PENDING, &labels).set(consumer.ack_pending as f64);
        metrics::gauge!(names::CONSUMER_DEAD_LETTERS_WAITING, &labels)
            .set(consumer.dead_letters as f64);
    }
}
