//! The `agora` binary seen from outside: started, stopped, benchmarked.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn agora() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agora"))
}

/// Kills the child if a test fails before it is reaped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of the child's stdout, read on a thread so that waiting has a deadline.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line containing {needle:?}: {e}"),
        }
    }
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn up_runs_until_ctrl_c_and_stops_cleanly_twice_on_the_same_data() {
    let data = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let mut child = Reaped(
            agora()
                .args(["up", "--data-dir"])
                .arg(data.path())
                .args(["--port", "0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start agora up"),
        );
        let lines = lines_of(&mut child.0);
        wait_for_line(&lines, "agora: ready");
        assert!(
            data.path().join("bus.db").is_file(),
            "round {round}: the bus lives in the data dir"
        );
        interrupt(&child.0);
        wait_for_line(&lines, "stopped cleanly");
        let status = child.0.wait().unwrap();
        assert!(status.success(), "round {round}: exit status {status}");
    }
}

#[test]
fn bench_bus_prints_figures_as_json() {
    let out = agora()
        .args([
            "bench",
            "bus",
            "--json",
            "--no-nats",
            "--messages",
            "3000",
            "--rate",
            "500",
            "--latency-secs",
            "1",
        ])
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .expect("run agora bench bus");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let embedded = &report["embedded"];
    assert!(embedded["throughput_msgs"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (
        embedded["p50_ms"].as_f64().unwrap(),
        embedded["p99_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "{embedded}");
    assert!(embedded["latency_samples"].as_u64().unwrap() >= 400);
    assert!(
        report["sqlite_baseline"]["single_row_commits_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(report.get("nats").is_none());
}

#[test]
fn audit_of_a_clean_data_dir_exits_0_and_a_broken_one_exits_1() {
    let data = tempfile::tempdir().unwrap();
    let out = agora()
        .args(["audit", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run agora audit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no inconsistency"));

    let db = rusqlite::Connection::open(data.path().join("ordering.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE ordering_orders (id TEXT PRIMARY KEY, status TEXT NOT NULL);
         INSERT INTO ordering_orders VALUES ('o-1', 'accepted');",
    )
    .unwrap();
    drop(db);
    let out = agora()
        .args(["audit", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run agora audit");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("order o-1 is accepted"), "{stdout}");
}

#[test]
fn audit_of_databases_it_cannot_reach_names_the_service_and_never_the_password() {
    let out = agora()
        .args([
            "audit",
            "--db-template",
            "postgres://agora:hunter2-in-the-url@127.0.0.1:1/agora_{service}?password=hunter2",
        ])
        .output()
        .expect("run agora audit");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("open the catalog store at postgres://127.0.0.1:1/agora_catalog"),
        "{stderr}"
    );
    let everything = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!everything.contains("hunter2"), "{everything}");
}

#[test]
fn chaos_bus_and_settings_commands_drive_a_running_shop() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Reaped(
        agora()
            .args(["up", "--data-dir"])
            .arg(data.path())
            .args(["--port", "0"])
            .env("AGORA_ADMIN_PASSWORD", "cli-admin-password")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start agora up"),
    );
    let lines = lines_of(&mut child.0);
    let ready = wait_for_line(&lines, "agora: ready on ");
    let url = ready
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL")
        .to_owned();
    let run = |args: &[&str]| {
        let out = agora()
            .args(args)
            .args(["--url", &url, "--admin-password", "cli-admin-password"])
            .output()
            .expect("run agora");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["chaos", "customer", "down"]).contains("\"down\""));
    assert!(run(&["chaos", "customer", "slow", "--latency-ms", "5"]).contains("\"slow\""));
    assert!(run(&["chaos", "customer", "flaky", "--error-rate", "0.5"]).contains("\"flaky\""));
    assert!(run(&["chaos", "customer", "ok"]).contains("\"ok\""));
    assert!(run(&["bus", "pause"]).contains("true"));
    assert!(run(&["bus", "resume"]).contains("false"));
    assert!(run(&["settings", "customer-data", "sync"]).contains("\"sync\""));

    let unknown = agora()
        .args(["chaos", "nobody", "down", "--url", &url])
        .args(["--admin-password", "cli-admin-password"])
        .output()
        .expect("run agora");
    assert!(!unknown.status.success(), "an unknown service is an error");
    interrupt(&child.0);
    wait_for_line(&lines, "stopped cleanly");
}

/// A service whose bus died stops on SIGTERM all the same, with exit 0 within the
/// 10 s an orchestrator gives (its consumers and relay cannot finish talking to the
/// bus; what they did not do is done after the next start).
#[test]
fn run_stops_within_10_s_even_when_its_bus_is_gone() {
    use agora::child::Agora;
    use agora_testkit::{NatsServer, PgDatabase};

    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let Some(database) = runtime.block_on(PgDatabase::create()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let secrets = dir.path().join("secrets");
    let out = agora()
        .args(["secrets", "init"])
        .arg(&secrets)
        .output()
        .expect("agora secrets init");
    assert!(out.status.success(), "{out:?}");
    let mut command = agora();
    command
        .args(["run", "inventory"])
        .env("AGORA_LISTEN", "127.0.0.1:0")
        .env("AGORA_BUS", nats.url())
        .env("AGORA_DB", database.url())
        .env("AGORA_SECRET_DIR", &secrets)
        .env("AGORA_URL_IDENTITY", "http://127.0.0.1:1")
        .env("RUST_LOG", "error")
        .stderr(Stdio::null());
    let mut inventory =
        Agora::start(command, Duration::from_secs(60)).expect("agora run inventory gets ready");
    nats.kill();
    let stopped = std::time::Instant::now();
    let status = inventory
        .signal("TERM", Duration::from_secs(10))
        .expect("stopped within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    println!("stopped in {:?} with its bus gone", stopped.elapsed());
    drop(inventory);
    drop(database);
}
