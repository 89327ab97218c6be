//! An `agora up` or `agora run` child process, as `agora nemesis` and the tests run
//! one: ready once it printed `agora: ready on <url>`, killed and reaped when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running `agora` child.
#[derive(Debug)]
pub struct Agora {
    pub process: std::process::Child,
    /// Where it listens, from its ready line.
    pub url: String,
}

impl Agora {
    /// Spawns `command` (its standard output is read here) and waits up to `within`
    /// for its `agora: ready on <url>` line.
    pub fn start(mut command: Command, within: Duration) -> anyhow::Result<Agora> {
        let process = command
            .stdout(Stdio::piped())
            .spawn()
            .context("start agora")?;
        // Reaped on drop from here on, whatever happens.
        let mut agora = Agora {
            process,
            url: String::new(),
        };
        let stdout = agora.process.stdout.take().context("agora's output")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .with_context(|| format!("agora did not get ready within {within:?}"))?;
            if let Some(rest) = line.strip_prefix("agora: ready on ") {
                agora.url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return Ok(agora);
            }
        }
    }

    /// Sends `signal` (`INT`, `TERM`) and waits up to `within` for the exit.
    pub fn signal(&mut self, signal: &str, within: Duration) -> anyhow::Result<ExitStatus> {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.process.id().to_string()])
            .status()
            .context("kill")?;
        if !sent.success() {
            bail!("kill -{signal} failed");
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.process.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("still running {within:?} after SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Agora {
    fn drop(&mut self) {
        self.kill();
    }
}
