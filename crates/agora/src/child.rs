//! An `agora up` or `agora run` child process, as `agora nemesis` and the tests run
//! one: ready once it printed `agora: ready on <url>`, killed and reaped when dropped.
//! Its output is read all along (what it printed before and after its ready line).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running `agora` child.
#[derive(Debug)]
pub struct Agora {
    pub process: std::process::Child,
    /// Where it listens, from its ready line.
    pub url: String,
    /// The lines it printed before its ready line: its standard output, and its
    /// standard error too when started with [`Agora::start_with_logs`].
    pub before_ready: Vec<String>,
    /// The lines after its ready line, as they come.
    lines: Receiver<String>,
}

impl Agora {
    /// Spawns `command` (its standard output is read here) and waits up to `within`
    /// for its `agora: ready on <url>` line.
    pub fn start(mut command: Command, within: Duration) -> anyhow::Result<Agora> {
        let mut process = command
            .stdout(Stdio::piped())
            .spawn()
            .context("start agora")?;
        let Some(stdout) = process.stdout.take() else {
            let _ = process.kill();
            let _ = process.wait();
            bail!("agora's output is not piped");
        };
        Agora::ready(process, stdout, within)
    }

    /// [`Agora::start`] with the standard error in the same pipe as the standard
    /// output, in the order they were written: the logs before the ready line are in
    /// [`Agora::before_ready`], those after come from [`Agora::line`].
    pub fn start_with_logs(mut command: Command, within: Duration) -> anyhow::Result<Agora> {
        let (reader, writer) = std::io::pipe().context("a pipe for agora's output")?;
        command
            .stdout(writer.try_clone().context("a pipe for agora's output")?)
            .stderr(writer);
        let process = command.spawn().context("start agora")?;
        // The writing ends are the child's alone now: its exit ends the reading.
        drop(command);
        Agora::ready(process, reader, within)
    }

    /// Reads `output` on a thread and waits up to `within` for the ready line.
    fn ready(
        process: std::process::Child,
        output: impl Read + Send + 'static,
        within: Duration,
    ) -> anyhow::Result<Agora> {
        let (tx, rx) = std::sync::mpsc::channel();
        // Reaped on drop from here on, whatever happens.
        let mut agora = Agora {
            process,
            url: String::new(),
            before_ready: Vec::new(),
            lines: rx,
        };
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = agora
                .lines
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
            agora.before_ready.push(line);
        }
    }

    /// Its next line of output, waiting up to `within`.
    pub fn line(&self, within: Duration) -> anyhow::Result<String> {
        self.lines
            .recv_timeout(within)
            .with_context(|| format!("no line from agora within {within:?}"))
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
