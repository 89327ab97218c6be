//! What `agora up` writes, as a person and a log collector see it: by default a short
//! console (the admin's password, a ready line per service, warnings and errors);
//! `RUST_LOG` for the detail; `AGORA_LOG_FORMAT=json` for JSON lines that carry the
//! trace of the request or the event they are about.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agora::child::Agora;
use agora::runtime::ServiceName;
use serde_json::{Value, json};

const READY_WITHIN: Duration = Duration::from_secs(60);

/// `agora up` on `data`, with none of the logging settings of the environment.
fn up(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agora"));
    command
        .args(["up", "--port", "0", "--no-rate-limits", "--data-dir"])
        .arg(data)
        .env_remove("RUST_LOG")
        .env_remove("AGORA_LOG_FORMAT")
        .env_remove("AGORA_ADMIN_PASSWORD");
    command
}

/// SIGINT, and a clean exit.
fn stop(mut agora: Agora) {
    let status = agora
        .signal("INT", Duration::from_secs(30))
        .expect("agora stops");
    assert!(status.success(), "exit status {status}");
}

/// The level and target of a text log line (`<timestamp>  INFO <target>: …`), `None`
/// for a line that is not one.
fn level_and_target(line: &str) -> Option<(&str, &str)> {
    let mut words = line.split_whitespace();
    let _timestamp = words.next().filter(|w| w.ends_with('Z'))?;
    let level = words
        .next()
        .filter(|w| ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(w))?;
    let target = words.next()?.strip_suffix(':')?;
    Some((level, target))
}

#[test]
fn by_default_up_shows_the_password_a_line_per_service_and_the_ready_line() {
    let data = tempfile::tempdir().unwrap();
    let agora = Agora::start_with_logs(up(data.path()), READY_WITHIN).expect("agora up gets ready");
    let lines = agora.before_ready.clone();
    let shown = lines.join("\n");
    assert!(
        lines.len() <= 15,
        "{} lines before the ready line:\n{shown}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("identity: created admin@agora.local with the generated password ")),
        "the admin's password is shown:\n{shown}"
    );
    for name in ServiceName::ALL {
        let ready = format!("{name}: ready on http://127.0.0.1:");
        assert!(
            lines.iter().any(|l| l.contains(&ready)),
            "no {ready:?} line:\n{shown}"
        );
    }
    for line in &lines {
        if let Some((level, target)) = level_and_target(line) {
            assert!(
                matches!(level, "WARN" | "ERROR") || target == agora::logging::CONSOLE,
                "a detail line on the default console: {line}"
            );
        }
    }
    stop(agora);
}

#[test]
fn rust_log_brings_the_detail_back() {
    let data = tempfile::tempdir().unwrap();
    let mut command = up(data.path());
    command.env("RUST_LOG", "info");
    let agora = Agora::start_with_logs(command, READY_WITHIN).expect("agora up gets ready");
    let shown = agora.before_ready.join("\n");
    for detail in ["identity started", "demo products added", "demo prices set"] {
        assert!(shown.contains(detail), "no {detail:?} line:\n{shown}");
    }
    assert!(agora.before_ready.len() > 15, "{shown}");
    stop(agora);
}

#[test]
fn an_unknown_log_format_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let output = up(data.path())
        .env("AGORA_LOG_FORMAT", "yaml")
        .output()
        .expect("run agora up");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AGORA_LOG_FORMAT") && stderr.contains("`text` or `json`"),
        "{stderr}"
    );
    assert!(
        !data.path().join("bus.db").exists(),
        "refused before anything started"
    );
}

#[test]
fn an_invalid_rust_log_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let output = up(data.path())
        .env("RUST_LOG", "agora=loud")
        .output()
        .expect("run agora up");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RUST_LOG is \"agora=loud\""), "{stderr}");
    assert!(
        !data.path().join("bus.db").exists(),
        "refused before anything started"
    );
}

/// A JSON log line: an object with a timestamp, a level, a target and a message.
fn json_line(line: &str) -> Value {
    let value: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    for key in ["timestamp", "level", "target"] {
        assert!(value[key].is_string(), "no {key}: {line}");
    }
    assert!(value["fields"]["message"].is_string(), "no message: {line}");
    value
}

/// Reads `agora`'s JSON lines until one satisfies `found`, for at most `within`.
fn wait_for_json(agora: &Agora, within: Duration, found: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = agora.line(left).expect("the line looked for");
        let value = json_line(&line);
        if found(&value) {
            return value;
        }
    }
}

/// A span that handles a request or a delivery, in one JSON line's span list.
fn span_named<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

#[tokio::test]
async fn json_lines_carry_the_trace_of_the_request_and_of_the_event_it_caused() {
    let data = tempfile::tempdir().unwrap();
    let mut command = up(data.path());
    command
        .env("AGORA_LOG_FORMAT", "json")
        // Detail, and the line each handled delivery writes.
        .env("RUST_LOG", "info,agora_messaging::subscriber=debug")
        // No password line: every line of the output is a log line but the ready line.
        .env("AGORA_ADMIN_PASSWORD", "console test admin password");
    let agora = Agora::start_with_logs(command, READY_WITHIN).expect("agora up gets ready");
    assert!(!agora.before_ready.is_empty());
    for line in &agora.before_ready {
        json_line(line);
    }
    let url = agora.url.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // A sign-up: identity logs it in the span of the request, in the caller's trace.
    let signup_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{signup_trace}-00f067aa0ba902b7-01");
    let (email, password) = ("console@example.com", "console test password");
    let answer = client
        .post(format!("{url}/api/identity/users"))
        .header("traceparent", &traceparent)
        .json(&json!({"email": email, "password": password, "name": "Console"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let signed_up = wait_for_json(&agora, Duration::from_secs(10), |line| {
        line["fields"]["message"] == "user signed up"
    });
    assert_eq!(signed_up["trace_id"], signup_trace, "{signed_up}");
    let span_id = signed_up["span_id"].as_str().expect("a span id");
    assert!(agora_messaging::trace::is_span_id(span_id), "{signed_up}");
    assert_ne!(
        span_id, "00f067aa0ba902b7",
        "the request's own span, not the caller's"
    );
    let request = span_named(&signed_up, "request").expect("in the request's span");
    assert_eq!(request["trace_id"], signup_trace);

    // An address change: the customer service logs it in the request's trace, and the
    // event it publishes carries the trace to its consumers' deliveries.
    let body: Value = client
        .post(format!("{url}/api/identity/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().expect("a token").to_owned();
    let address_trace = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{address_trace}-b7ad6b7169203331-01");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The profile comes from the sign-up event: it may not be there yet.
        let answer = client
            .put(format!("{url}/api/customers/me/address"))
            .bearer_auth(&token)
            .header("traceparent", &traceparent)
            .json(&json!({"line1": "1 Log Lane", "city": "Leeds", "postal_code": "LS1 1AA", "country": "GB"}))
            .send()
            .await
            .unwrap();
        if answer.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the address is never taken: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let changed = wait_for_json(&agora, Duration::from_secs(10), |line| {
        line["fields"]["message"] == "address changed"
    });
    assert_eq!(changed["trace_id"], address_trace, "{changed}");
    let handled = wait_for_json(&agora, Duration::from_secs(10), |line| {
        line["fields"]["message"] == "handled" && line["trace_id"] == address_trace
    });
    let delivery = span_named(&handled, "handle").expect("in the delivery's span");
    assert_eq!(delivery["trace_id"], address_trace, "{handled}");
    assert!(
        delivery["event_type"]
            .as_str()
            .is_some_and(|t| t.starts_with("Customer")),
        "{handled}"
    );
    assert_eq!(delivery["span_id"], handled["span_id"]);
    assert_ne!(handled["span_id"], changed["span_id"], "a span of its own");
    stop(agora);
}
