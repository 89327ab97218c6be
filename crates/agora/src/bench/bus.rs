//! `agora bench bus`: what the bus does on this machine, beside what the machine can do.
//!
//! For each Agora backend (embedded, NATS) and each baseline (raw JetStream through
//! plain async-nats calls, raw NATS core pub/sub, raw SQLite commits) it measures, in
//! one run:
//! - throughput: N messages published (pipelined) and consumed (and acked), from the
//!   first publish to the last message consumed;
//! - latency at a steady rate: messages published on a fixed schedule (open loop: a
//!   slow publish does not delay the next one), each carrying the instant its publish
//!   began; the consumer records `received - publish began`, so the figure includes
//!   the durable commit (fsync) and the delivery. For Agora's backends it also
//!   records `received - committed` (the delivery's commit time): commit-to-consumer,
//!   the bus's own delivery path. Each latency run starts once the throughput run's
//!   writes are on the disk (`sync`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agora_bus::embedded::EmbeddedBus;
use agora_bus::nats::NatsBus;
use agora_bus::{ConsumerConfig, DeliverPolicy, OutgoingMessage, SharedBus, StreamConfig};
use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct BusBenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// A NATS server with JetStream to measure against; without it a private
    /// `nats-server -js` is started on a free port with a temporary store.
    #[arg(long, env = "AGORA_NATS_URL")]
    nats_url: Option<String>,
    /// Messages in each throughput run.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Messages per second in the latency runs.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds each latency run lasts.
    #[arg(long, default_value_t = 5)]
    latency_secs: u64,
    /// Payload size of every message.
    #[arg(long, default_value_t = 128)]
    payload_bytes: usize,
    /// Where the embedded bus and the SQLite baseline write (default: a temporary
    /// directory under the current one, so that it is on a real disk).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip the NATS backend and the NATS baselines.
    #[arg(long)]
    no_nats: bool,
}

/// One backend's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Messages per second, publish→consume.
    pub throughput_msgs: f64,
    /// Publish→consume latency at the steady rate.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Messages measured in the latency run.
    pub latency_samples: u64,
    /// Publish call → durable acknowledgement, at the steady rate (Agora backends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_p99_ms: Option<f64>,
    /// Commit (the message durable) → consumer, at the steady rate (Agora backends:
    /// the bus's own delivery path, without the fsync a publisher waits for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_to_consumer_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_to_consumer_p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    embedded: Figures,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats: Option<Figures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jetstream_baseline: Option<Figures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_core_baseline: Option<Figures>,
    sqlite_baseline: SqliteBaseline,
    /// nats.throughput / jetstream_baseline.throughput
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_vs_jetstream_throughput: Option<f64>,
    config: Config,
}

#[derive(Debug, Serialize)]
struct Config {
    messages: usize,
    rate: u64,
    latency_secs: u64,
    payload_bytes: usize,
    cores: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SqliteBaseline {
    /// fsync'd single-row commits per second.
    pub single_row_commits_per_s: f64,
    /// Latency of one fsync'd single-row commit: the floor under any durable publish.
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    /// Rows per second, fsync'd, in transactions of 100 rows.
    pub rows_per_s_batches_of_100: f64,
}

pub async fn run(args: BusBenchArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir_in("."),
    }
    .context("create a directory for the embedded bus")?;

    say(&args, "measuring: raw SQLite commits (baseline)");
    let sqlite_baseline = sqlite_baseline(dir.path().join("baseline.db"))?;

    say(&args, "measuring: embedded bus");
    let embedded = {
        let bus: SharedBus = Arc::new(EmbeddedBus::open(dir.path().join("bus.db")).await?);
        bus_figures(&bus, &args).await?
    };

    let (mut nats, mut jetstream_baseline, mut nats_core_baseline) = (None, None, None);
    if !args.no_nats {
        let server;
        let url = match &args.nats_url {
            Some(url) => url.clone(),
            None => {
                server = agora_testkit::NatsServer::start().context(
                    "nats-server is not installed: install it, pass --nats-url, or pass --no-nats",
                )?;
                server.url()
            }
        };
        say(&args, "measuring: NATS JetStream backend");
        let bus: SharedBus = Arc::new(NatsBus::connect(&url).await?);
        nats = Some(bus_figures(&bus, &args).await?);
        say(&args, "measuring: raw JetStream (baseline)");
        jetstream_baseline = Some(jetstream_figures(&url, &args).await?);
        say(&args, "measuring: raw NATS core pub/sub (baseline)");
        nats_core_baseline = Some(nats_core_figures(&url, &args).await?);
    }

    let report = Report {
        nats_vs_jetstream_throughput: match (&nats, &jetstream_baseline) {
            (Some(n), Some(j)) => Some(n.throughput_msgs / j.throughput_msgs),
            _ => None,
        },
        embedded,
        nats,
        jetstream_baseline,
        nats_core_baseline,
        sqlite_baseline,
        config: Config {
            messages: args.messages,
            rate: args.rate,
            latency_secs: args.latency_secs,
            payload_bytes: args.payload_bytes,
            cores,
        },
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn say(args: &BusBenchArgs, what: &str) {
    if !args.json {
        eprintln!("{what}…");
    }
}

fn print_table(r: &Report) {
    println!(
        "agora bench bus — {} messages of {} B, latency at {} msg/s for {} s, {} cores",
        r.config.messages,
        r.config.payload_bytes,
        r.config.rate,
        r.config.latency_secs,
        r.config.cores
    );
    println!();
    println!(
        "{:<22} {:>14} {:>10} {:>10} {:>10} {:>16} {:>22}",
        "", "msg/s", "p50 ms", "p99 ms", "max ms", "publish p99 ms", "commit→consumer p99"
    );
    let rows = [
        ("embedded (SQLite)", Some(&r.embedded)),
        ("nats (JetStream)", r.nats.as_ref()),
        ("raw JetStream", r.jetstream_baseline.as_ref()),
        ("raw NATS core", r.nats_core_baseline.as_ref()),
    ];
    for (name, figures) in rows {
        if let Some(f) = figures {
            let or_dash = |v: Option<f64>| v.map_or("-".into(), |p| format!("{p:.3}"));
            println!(
                "{:<22} {:>14.0} {:>10.3} {:>10.3} {:>10.3} {:>16} {:>22}",
                name,
                f.throughput_msgs,
                f.p50_ms,
                f.p99_ms,
                f.max_ms,
                or_dash(f.publish_p99_ms),
                or_dash(f.commit_to_consumer_p99_ms)
            );
        }
    }
    println!();
    let sq = &r.sqlite_baseline;
    println!(
        "raw SQLite (WAL, synchronous=FULL): {:.0} single-row commits/s (p50 {:.3} ms, p99 {:.3} ms), {:.0} rows/s in batches of 100",
        sq.single_row_commits_per_s,
        sq.commit_p50_ms,
        sq.commit_p99_ms,
        sq.rows_per_s_batches_of_100
    );
    if let Some(ratio) = r.nats_vs_jetstream_throughput {
        println!("nats backend / raw JetStream throughput: {ratio:.2}");
    }
    println!(
        "embedded throughput / raw SQLite batched rows: {:.2}",
        r.embedded.throughput_msgs / r.sqlite_baseline.rows_per_s_batches_of_100
    );
}

/// Waits until the throughput run's writes are on the disk (`sync`), so that a latency
/// run measures its own fsyncs, not the writeback of the run before it (which doubled
/// the embedded bus's p99 in runs on a virtual disk).
async fn settle_disk() {
    // Without `sync` (not a Unix), the run goes on unsettled.
    let _ = tokio::process::Command::new("sync").status().await;
}

/// A payload that starts with the nanoseconds since `epoch` at which its publish began.
fn stamped(epoch: Instant, size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(8));
    buf.put_u64(epoch.elapsed().as_nanos() as u64);
    buf.resize(size.max(8), b'x');
    buf.freeze()
}

fn latency_of(epoch: Instant, payload: &[u8]) -> u64 {
    let sent = u64::from_be_bytes(payload[..8].try_into().expect("8-byte stamp"));
    (epoch.elapsed().as_nanos() as u64).saturating_sub(sent)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram bounds")
}

fn figures(throughput_msgs: f64, h: &Histogram<u64>) -> Figures {
    let ms = |ns: u64| ns as f64 / 1e6;
    Figures {
        throughput_msgs,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        latency_samples: h.len(),
        publish_p99_ms: None,
        commit_to_consumer_p50_ms: None,
        commit_to_consumer_p99_ms: None,
    }
}

/// Through the `Bus` trait, as Agora's services use it.
async fn bus_figures(bus: &SharedBus, args: &BusBenchArgs) -> anyhow::Result<Figures> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("BENCH_{run}");
    bus.ensure_stream(&StreamConfig::new(&stream, [format!("bench{run}.>")]))
        .await?;
    let subject = format!("bench{run}.msg");

    // Throughput.
    let consumer = bus
        .consumer(&ConsumerConfig::new(&stream, "throughput"))
        .await?;
    let n = args.messages;
    let consume = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            let batch = consumer.fetch(1000, Duration::from_secs(5)).await?;
            if batch.is_empty() {
                bail!("throughput run stalled at {got} of {n} messages");
            }
            got += batch.len();
            futures::future::try_join_all(batch.into_iter().map(|d| d.ack())).await?;
        }
        Ok(())
    });
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let started = Instant::now();
    let publishers = 4;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let bus = bus.clone();
        let (subject, payload, run) = (subject.clone(), payload.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (p..n).step_by(publishers).collect();
            for chunk in mine.chunks(256) {
                let batch = chunk
                    .iter()
                    .map(|i| {
                        OutgoingMessage::new(
                            format!("{run}-t{i}"),
                            subject.clone(),
                            payload.clone(),
                        )
                    })
                    .collect();
                bus.publish_batch(batch).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    consume.await??;
    let throughput = n as f64 / started.elapsed().as_secs_f64();

    // Latency at a steady rate.
    settle_disk().await;
    let consumer = bus
        .consumer(&ConsumerConfig::new(&stream, "latency").deliver(DeliverPolicy::New))
        .await?;
    let epoch = Instant::now();
    let total = (args.rate * args.latency_secs) as usize;
    let warmup = (args.rate as usize / 5).min(total / 10);
    let consume = tokio::spawn(async move {
        let (mut h, mut from_commit) = (histogram(), histogram());
        let mut got = 0;
        while got < total {
            let batch = consumer.fetch(1000, Duration::from_secs(5)).await?;
            if batch.is_empty() {
                bail!("latency run stalled at {got} of {total} messages");
            }
            let received = SystemTime::now();
            for d in batch {
                if got >= warmup {
                    h.record(latency_of(epoch, &d.payload).max(1_000))?;
                    let committed = d.committed.context("a fresh message has no commit time")?;
                    let since = received.duration_since(committed).unwrap_or_default();
                    from_commit.record((since.as_nanos() as u64).max(1_000))?;
                }
                got += 1;
                d.ack().await?;
            }
        }
        Ok((h, from_commit))
    });
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        let bus = bus.clone();
        let message = OutgoingMessage::new(
            format!("{run}-l{i}"),
            subject.clone(),
            stamped(epoch, args.payload_bytes),
        );
        inflight.push(tokio::spawn(async move {
            let began = Instant::now();
            bus.publish(message).await?;
            anyhow::Ok(began.elapsed())
        }));
    }
    let mut publish = histogram();
    for (i, p) in inflight.into_iter().enumerate() {
        let took = p.await??;
        if i >= warmup {
            publish.record((took.as_nanos() as u64).max(1_000))?;
        }
    }
    let (h, from_commit) = consume.await??;
    let mut f = figures(throughput, &h);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    f.publish_p99_ms = Some(ms(&publish, 0.99));
    f.commit_to_consumer_p50_ms = Some(ms(&from_commit, 0.50));
    f.commit_to_consumer_p99_ms = Some(ms(&from_commit, 0.99));
    Ok(f)
}

/// Plain async-nats JetStream calls: pipelined publishes, a pull consumer, plain acks.
async fn jetstream_figures(url: &str, args: &BusBenchArgs) -> anyhow::Result<Figures> {
    use async_nats::jetstream::{self, consumer::pull, stream};
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("raw{run}.msg");
    let stream = js
        .create_stream(stream::Config {
            name: format!("RAW_{run}"),
            subjects: vec![format!("raw{run}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;

    let n = args.messages;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("throughput".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let consume = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        let mut got = 0;
        while got < n {
            let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .context("raw JetStream throughput run stalled")?
                .context("message stream ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            got += 1;
        }
        anyhow::Ok(())
    });
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for _ in 0..n {
        acks.push_back(js.publish(subject.clone(), payload.clone()).await?);
        if acks.len() >= 256 {
            acks.pop_front().expect("non-empty").await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    consume.await??;
    let throughput = n as f64 / started.elapsed().as_secs_f64();

    settle_disk().await;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("latency".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let epoch = Instant::now();
    let total = (args.rate * args.latency_secs) as usize;
    let warmup = (args.rate as usize / 5).min(total / 10);
    let consume = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        let mut h = histogram();
        for got in 0..total {
            let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .context("raw JetStream latency run stalled")?
                .context("message stream ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if got >= warmup {
                h.record(latency_of(epoch, &m.payload).max(1_000))?;
            }
            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        anyhow::Ok(h)
    });
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::with_capacity(total);
    for _ in 0..total {
        ticker.tick().await;
        pending.push(
            js.publish(subject.clone(), stamped(epoch, args.payload_bytes))
                .await?,
        );
    }
    for ack in pending {
        ack.await?;
    }
    let h = consume.await??;
    Ok(figures(throughput, &h))
}

/// Plain NATS core pub/sub: no persistence, no acks — the ceiling of the transport.
async fn nats_core_figures(url: &str, args: &BusBenchArgs) -> anyhow::Result<Figures> {
    let publisher = async_nats::connect(url).await?;
    // Room for a whole throughput run: the client drops what its buffer cannot hold.
    let subscriber_client = async_nats::ConnectOptions::new()
        .subscription_capacity(args.messages.max(65_536))
        .connect(url)
        .await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("core{run}");

    let n = args.messages;
    let mut subscriber = subscriber_client.subscribe(subject.clone()).await?;
    subscriber_client.flush().await?;
    // NATS core is at most once: a consumer that falls behind loses messages (the
    // server cuts a slow consumer off). So the run counts what arrives until the
    // stream goes quiet, and the rate is of messages received.
    let consume = tokio::spawn(async move {
        let (mut got, mut last) = (0usize, Instant::now());
        while got < n {
            match tokio::time::timeout(Duration::from_secs(1), subscriber.next()).await {
                Ok(Some(_)) => (got, last) = (got + 1, Instant::now()),
                Ok(None) => bail!("subscription ended"),
                Err(_) => break,
            }
        }
        anyhow::Ok((subscriber, got, last))
    });
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let started = Instant::now();
    for _ in 0..n {
        publisher.publish(subject.clone(), payload.clone()).await?;
    }
    publisher.flush().await?;
    let (mut subscriber, got, last) = consume.await??;
    if got == 0 {
        bail!("NATS core throughput run: nothing arrived");
    }
    if got < n {
        eprintln!(
            "raw NATS core: {} of {n} messages dropped (slow consumer; at most once)",
            n - got
        );
    }
    let throughput = got as f64 / last.duration_since(started).as_secs_f64();

    let epoch = Instant::now();
    let total = (args.rate * args.latency_secs) as usize;
    let warmup = (args.rate as usize / 5).min(total / 10);
    let consume = tokio::spawn(async move {
        let mut h = histogram();
        for got in 0..total {
            let m = tokio::time::timeout(Duration::from_secs(5), subscriber.next())
                .await
                .context("NATS core latency run stalled")?
                .context("subscription ended")?;
            if got >= warmup {
                h.record(latency_of(epoch, &m.payload).max(1_000))?;
            }
        }
        anyhow::Ok(h)
    });
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        ticker.tick().await;
        publisher
            .publish(subject.clone(), stamped(epoch, args.payload_bytes))
            .await?;
        publisher.flush().await?;
    }
    let h = consume.await??;
    Ok(figures(throughput, &h))
}

/// The embedded bus's figures with `messages` in the throughput run and `rate` msg/s
/// for `latency_secs` in the latency run, in a temporary directory under `dir`.
pub async fn embedded_figures(
    dir: &std::path::Path,
    messages: usize,
    rate: u64,
    latency_secs: u64,
) -> anyhow::Result<Figures> {
    let args = BusBenchArgs {
        json: true,
        nats_url: None,
        messages,
        rate,
        latency_secs,
        payload_bytes: 128,
        dir: None,
        no_nats: true,
    };
    let dir = tempfile::tempdir_in(dir).context("create a directory for the embedded bus")?;
    let embedded = Arc::new(EmbeddedBus::open(dir.path().join("bus.db")).await?);
    let bus: SharedBus = embedded.clone();
    let figures = bus_figures(&bus, &args).await;
    drop(bus);
    embedded.close().await;
    figures
}

/// What SQLite itself does here, with the settings the embedded bus uses.
pub fn sqlite_baseline(path: PathBuf) -> anyhow::Result<SqliteBaseline> {
    sqlite_baseline_of(path, 2_000, 2_000)
}

/// [`sqlite_baseline`] with `single` single-row commits and `batches` batches of 100.
pub fn sqlite_baseline_of(
    path: PathBuf,
    single: usize,
    batches: usize,
) -> anyhow::Result<SqliteBaseline> {
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
    )?;
    let body = vec![b'x'; 128];
    let mut commits = histogram();
    let started = Instant::now();
    for _ in 0..single {
        let one = Instant::now();
        conn.execute("INSERT INTO t (body) VALUES (?1)", [&body])?;
        commits.record((one.elapsed().as_nanos() as u64).max(1_000))?;
    }
    let single_row_commits_per_s = single as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..batches {
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO t (body) VALUES (?1)")?;
            for _ in 0..100 {
                insert.execute([&body])?;
            }
        }
        tx.commit()?;
    }
    let rows_per_s_batches_of_100 = (batches * 100) as f64 / started.elapsed().as_secs_f64();
    Ok(SqliteBaseline {
        single_row_commits_per_s,
        commit_p50_ms: commits.value_at_quantile(0.5) as f64 / 1e6,
        commit_p99_ms: commits.value_at_quantile(0.99) as f64 / 1e6,
        rows_per_s_batches_of_100,
    })
}
