//! The machine a benchmark ran on, and where this process's CPU time went.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Cores, memory, CPU model, kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".into(), |k| k.trim().to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            cpu_model,
            kernel,
        }
    }
}

/// CPU time of this process's threads, grouped by what they do, at one instant.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    /// Clock ticks (user + system) by group.
    ticks: BTreeMap<&'static str, u64>,
}

/// The group of a thread, by its name.
fn group(comm: &str) -> &'static str {
    if comm.starts_with("loadgen") {
        "load generator"
    } else if comm.starts_with("sqlx-sqlite") {
        "SQLite (services' stores)"
    } else if comm.starts_with("agora-bus") {
        "SQLite (embedded bus writer)"
    } else if comm.starts_with("tokio") {
        "shop (tokio workers: HTTP, JSON, auth, services)"
    } else {
        "other"
    }
}

impl CpuSample {
    pub fn now() -> Self {
        let mut ticks = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                    continue;
                };
                // pid (comm) state ppid … ; comm may hold spaces: split at the last ')'.
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    continue;
                };
                let comm = &stat[open + 1..close];
                let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
                // After the comm: state is field 3 (index 0 here); utime 14, stime 15.
                let used = fields
                    .get(11)
                    .and_then(|u| u.parse::<u64>().ok())
                    .unwrap_or(0)
                    + fields
                        .get(12)
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0);
                *ticks.entry(group(comm)).or_default() += used;
            }
        }
        Self {
            at: Instant::now(),
            ticks,
        }
    }

    /// Cores kept busy since `earlier`, by group (threads that ended in between are
    /// not counted).
    pub fn since(&self, earlier: &CpuSample) -> CpuShare {
        const TICKS_PER_S: f64 = 100.0;
        let seconds = self.at.duration_since(earlier.at).as_secs_f64().max(1e-3);
        let by_group: BTreeMap<String, f64> = self
            .ticks
            .iter()
            .map(|(group, now)| {
                let before = earlier.ticks.get(group).copied().unwrap_or(0);
                (
                    (*group).to_owned(),
                    now.saturating_sub(before) as f64 / TICKS_PER_S / seconds,
                )
            })
            .filter(|(_, cores)| *cores > 0.0)
            .collect();
        CpuShare {
            busy_cores: by_group.values().sum(),
            by_group,
        }
    }
}

/// Cores kept busy over an interval.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CpuShare {
    pub busy_cores: f64,
    pub by_group: BTreeMap<String, f64>,
}

impl CpuShare {
    pub fn describe(&self) -> String {
        let mut parts: Vec<(&String, &f64)> = self.by_group.iter().collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = parts.iter().map(|(g, c)| format!("{g} {c:.2}")).collect();
        format!("{:.2} cores busy: {}", self.busy_cores, parts.join(", "))
    }
}
