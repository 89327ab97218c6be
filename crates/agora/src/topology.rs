//! The distributed topology on one machine: an `agora run` process per service
//! instance, on a NATS JetStream cluster and PostgreSQL databases the caller provides,
//! configured by the `AGORA_*` variables alone, as a deployment runs it. What
//! `agora bench` measures and `tests/topology.rs` breaks.
//!
//! Every instance listens on a port chosen before any starts (so each caller's
//! `AGORA_URL_<SERVICE>` lists every instance, and an instance killed comes back on
//! the address its callers know). Every process is killed and reaped when the
//! topology is dropped, whatever happened; the secrets live in a temporary directory
//! removed with it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::child::Agora;
use crate::runtime::ServiceName;

/// What to start.
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// The `agora` binary.
    pub binary: PathBuf,
    /// `AGORA_BUS`: the cluster's client URLs, comma-separated.
    pub bus: String,
    /// Each service's database, `{service}` replaced by its name (its instances share
    /// it).
    pub db_template: String,
    /// `pool_max_conns` of each process's database pool, when set: the default pool
    /// of every process together can exceed PostgreSQL's `max_connections`.
    pub pool_max_conns: Option<u32>,
    /// Instances per service; 1 for a service not listed.
    pub instances: BTreeMap<ServiceName, usize>,
    /// The admin's password, written into the deployment's secrets.
    pub admin_password: String,
    /// `RUST_LOG` of every process (their standard error is this process's).
    pub log: String,
    /// How long one process may take to print its ready line.
    pub ready_within: Duration,
}

impl TopologyConfig {
    /// One instance of each service, warnings logged, 60 s to get ready.
    pub fn new(binary: PathBuf, bus: String, db_template: String) -> Self {
        Self {
            binary,
            bus,
            db_template,
            pool_max_conns: None,
            instances: BTreeMap::new(),
            admin_password: format!("topology-{}", uuid::Uuid::now_v7().simple()),
            log: "warn".into(),
            ready_within: Duration::from_secs(60),
        }
    }

    fn instances_of(&self, service: ServiceName) -> usize {
        self.instances.get(&service).copied().unwrap_or(1).max(1)
    }
}

/// One instance: where it listens, and its process while it runs.
#[derive(Debug)]
pub struct Instance {
    pub service: ServiceName,
    /// Its rank among its service's instances, from 0.
    pub index: usize,
    pub url: String,
    port: u16,
    process: Option<Agora>,
}

impl Instance {
    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.process.id())
    }
}

/// The running topology.
#[derive(Debug)]
pub struct Topology {
    config: TopologyConfig,
    /// The environment every process shares.
    env: BTreeMap<String, String>,
    /// In start order.
    instances: Vec<Instance>,
    _secrets: tempfile::TempDir,
}

impl Topology {
    /// Writes the deployment's secrets, then starts every instance, each service
    /// after those it calls (those that call nothing not yet started start side by
    /// side), and waits until each is ready.
    pub fn start(config: TopologyConfig) -> anyhow::Result<Topology> {
        let secrets = tempfile::Builder::new()
            .prefix("agora-topology-")
            .tempdir()
            .context("a directory for the secrets")?;
        let secret_dir = secrets.path().join("secrets");
        crate::secrets::Secrets::init(&secret_dir, Some(&config.admin_password))?;

        let count: usize = ServiceName::ALL
            .iter()
            .map(|&s| config.instances_of(s))
            .sum();
        let mut ports = agora_testkit::free_ports(count).into_iter();
        let mut instances = Vec::with_capacity(count);
        let mut env = BTreeMap::from([
            ("AGORA_BUS".to_owned(), config.bus.clone()),
            (
                "AGORA_SECRET_DIR".to_owned(),
                secret_dir.display().to_string(),
            ),
            ("AGORA_DEMO".to_owned(), "true".to_owned()),
            // The load comes from one address: per-client limits would refuse it.
            ("AGORA_NO_RATE_LIMITS".to_owned(), "true".to_owned()),
            ("RUST_LOG".to_owned(), config.log.clone()),
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
        ]);
        for service in ServiceName::ALL {
            let mut urls = Vec::new();
            for index in 0..config.instances_of(service) {
                let port = ports.next().expect("a port per instance");
                let url = format!("http://127.0.0.1:{port}");
                urls.push(url.clone());
                instances.push(Instance {
                    service,
                    index,
                    url,
                    port,
                    process: None,
                });
            }
            env.insert(service.url_variable(), urls.join(","));
        }
        let mut topology = Topology {
            config,
            env,
            instances,
            _secrets: secrets,
        };
        for wave in waves() {
            topology.start_wave(&wave)?;
        }
        Ok(topology)
    }

    /// Starts the instances of `services` side by side (each service's instances one
    /// after the other: two instances of a service creating the same streams at once
    /// would race) and waits until all are ready.
    fn start_wave(&mut self, services: &[ServiceName]) -> anyhow::Result<()> {
        let within = self.config.ready_within;
        let plans: Vec<Vec<(usize, Command)>> = services
            .iter()
            .map(|&service| {
                (0..self.instances.len())
                    .filter(|&at| self.instances[at].service == service)
                    .map(|at| (at, self.command(at)))
                    .collect()
            })
            .collect();
        let started: Vec<(usize, anyhow::Result<Agora>)> = std::thread::scope(|scope| {
            let threads: Vec<_> = plans
                .into_iter()
                .map(|plan| {
                    scope.spawn(move || {
                        let mut started = Vec::new();
                        for (at, command) in plan {
                            let process = Agora::start(command, within);
                            let failed = process.is_err();
                            started.push((at, process));
                            if failed {
                                break;
                            }
                        }
                        started
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("a starting thread"))
                .collect()
        });
        let mut failure = None;
        for (at, process) in started {
            match process {
                Ok(process) => self.instances[at].process = Some(process),
                Err(error) => {
                    let Instance { service, index, .. } = self.instances[at];
                    failure = failure.or(Some(
                        error.context(format!("agora run {service} (instance {index})")),
                    ));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// The command that starts instance `at`.
    fn command(&self, at: usize) -> Command {
        let instance = &self.instances[at];
        let mut db = self
            .config
            .db_template
            .replace("{service}", instance.service.as_str());
        if let Some(max) = self.config.pool_max_conns {
            db.push(if db.contains('?') { '&' } else { '?' });
            db.push_str(&format!("pool_max_conns={max}"));
        }
        let mut command = Command::new(&self.config.binary);
        command
            .args(["run", instance.service.as_str()])
            .env_clear()
            .envs(&self.env)
            .env("AGORA_DB", db)
            .env("AGORA_LISTEN", format!("127.0.0.1:{}", instance.port))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        command
    }

    fn position(&self, service: ServiceName, index: usize) -> anyhow::Result<usize> {
        self.instances
            .iter()
            .position(|i| i.service == service && i.index == index)
            .with_context(|| format!("no instance {index} of {service}"))
    }

    /// Every instance, in start order.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The URLs of the instances of `service`.
    pub fn urls(&self, service: ServiceName) -> Vec<String> {
        self.instances
            .iter()
            .filter(|i| i.service == service)
            .map(|i| i.url.clone())
            .collect()
    }

    /// The process ids of the instances that run.
    pub fn pids(&self) -> Vec<u32> {
        self.instances.iter().filter_map(Instance::pid).collect()
    }

    pub fn admin_password(&self) -> &str {
        &self.config.admin_password
    }

    /// SIGKILLs instance `index` of `service` and reaps it.
    pub fn kill(&mut self, service: ServiceName, index: usize) -> anyhow::Result<()> {
        let at = self.position(service, index)?;
        if let Some(mut process) = self.instances[at].process.take() {
            process.kill();
        }
        Ok(())
    }

    /// Starts instance `index` of `service` again, on its port, if it is not running;
    /// waits until it is ready.
    pub fn restart(&mut self, service: ServiceName, index: usize) -> anyhow::Result<()> {
        let at = self.position(service, index)?;
        if self.instances[at].process.is_none() {
            let process = Agora::start(self.command(at), self.config.ready_within)
                .with_context(|| format!("agora run {service} (instance {index})"))?;
            self.instances[at].process = Some(process);
        }
        Ok(())
    }

    /// SIGTERM to every running instance, the last started first (the gateways
    /// before what they call), each given `within` to exit; every exit status, or
    /// why there is none (a process still there is then killed).
    pub fn terminate(
        &mut self,
        within: Duration,
    ) -> Vec<(ServiceName, usize, anyhow::Result<ExitStatus>)> {
        let mut exits = Vec::new();
        for instance in self.instances.iter_mut().rev() {
            if let Some(mut process) = instance.process.take() {
                exits.push((
                    instance.service,
                    instance.index,
                    process.signal("TERM", within),
                ));
            }
        }
        exits
    }
}

/// The services in waves: each after every service it calls, as early as that allows.
fn waves() -> Vec<Vec<ServiceName>> {
    let mut wave_of: BTreeMap<ServiceName, usize> = BTreeMap::new();
    let mut waves: Vec<Vec<ServiceName>> = Vec::new();
    // `ALL` lists each service after those it calls.
    for service in ServiceName::ALL {
        let wave = service
            .calls()
            .iter()
            .filter_map(|callee| wave_of.get(callee))
            .map(|w| w + 1)
            .max()
            .unwrap_or(0);
        wave_of.insert(service, wave);
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(service);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_starts_in_a_wave_after_those_it_calls() {
        let waves = waves();
        let wave = |s: ServiceName| waves.iter().position(|w| w.contains(&s)).unwrap();
        assert_eq!(
            waves.iter().map(Vec::len).sum::<usize>(),
            ServiceName::ALL.len()
        );
        for service in ServiceName::ALL {
            for &callee in service.calls() {
                assert!(wave(callee) < wave(service), "{service} calls {callee}");
            }
        }
        assert_eq!(waves[0], [ServiceName::Identity]);
        assert_eq!(waves.last().unwrap(), &[ServiceName::Gateway]);
    }
}
