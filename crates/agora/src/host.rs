//! One service's HTTP listener, and the chaos layer its levers set (`down`: 503 to
//! everything but the levers).
//!
//! Connections are served by hyper directly, under [`ServeConfig`]: a request's
//! headers must arrive within a few seconds (which also bounds how long a keep-alive
//! connection waits for its next request), a connection on which nothing moves for a
//! while is closed, and the connections from one client address are capped. A client
//! that opens connections and sends nothing, or half a request (slowloris), holds
//! them for seconds, not forever.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use agora_gateway::{Chaos, ChaosMode};
use agora_httpkit::Problem;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::{Mutex, RwLock};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// How a listener treats its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// A request's headers must have arrived this long after the server started
    /// waiting for them, or the connection is closed. The wait for the next request
    /// on a keep-alive connection counts: an idle keep-alive connection closes after
    /// this long too.
    pub header_read_timeout: Duration,
    /// A connection on which nothing is read or written for this long is closed
    /// (a client that stops reading an answer, or stops sending a body).
    pub idle_timeout: Duration,
    /// The most connections open at once from one client address; a connection over
    /// it is closed as soon as it is accepted. `None`: no cap.
    pub max_connections_per_client: Option<usize>,
    /// Addresses the cap does not apply to (trusted reverse proxies, which carry
    /// many clients' connections).
    pub uncapped: Vec<IpAddr>,
}

/// Defaults: [`DEFAULT_HEADER_READ_TIMEOUT`], [`DEFAULT_IDLE_TIMEOUT`],
/// [`DEFAULT_MAX_CONNECTIONS_PER_CLIENT`].
impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections_per_client: Some(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
            uncapped: Vec::new(),
        }
    }
}

impl ServeConfig {
    /// For a service's own listener, whose clients (the gateway, other services) all
    /// come from one address: the timeouts, no cap per address.
    pub fn internal() -> Self {
        Self {
            max_connections_per_client: None,
            ..Self::default()
        }
    }
}

/// A request's headers must arrive within 5 s (and an idle keep-alive connection
/// closes after 5 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection on which nothing moves for 60 s is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most 256 connections at once from one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;

/// A service router served on its own port.
#[derive(Debug)]
pub struct Host {
    name: String,
    addr: SocketAddr,
    router: Router,
    config: Arc<ServeConfig>,
    server: Option<JoinHandle<()>>,
    /// Tells the running server to drain: stop accepting, finish what is in flight.
    draining: tokio::sync::watch::Sender<bool>,
}

impl Host {
    /// Serves `router` as it is on `addr` with the default [`ServeConfig`]; port 0
    /// picks a free one.
    pub async fn start(name: &str, addr: SocketAddr, router: Router) -> std::io::Result<Self> {
        Self::start_with(name, addr, router, ServeConfig::default()).await
    }

    /// Serves `router` on `addr` under `config`.
    pub async fn start_with(
        name: &str,
        addr: SocketAddr,
        router: Router,
        config: ServeConfig,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut host = Self {
            name: name.to_owned(),
            addr,
            router,
            config: Arc::new(config),
            server: None,
            draining: tokio::sync::watch::channel(false).0,
        };
        host.serve(listener);
        Ok(host)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and lets the requests in flight finish (a
    /// keep-alive connection closes after its current answer), for at most `grace`;
    /// then closes whatever is left.
    pub async fn drain(&mut self, grace: Duration) {
        let Some(server) = self.server.take() else {
            return;
        };
        self.draining.send_replace(true);
        let abort = server.abort_handle();
        if tokio::time::timeout(grace, server).await.is_err() {
            tracing::warn!(service = %self.name, "requests still in flight after the grace period: closed");
            abort.abort();
        }
        tracing::debug!(service = %self.name, "listener drained");
    }

    fn serve(&mut self, listener: TcpListener) {
        let router = self.router.clone();
        let config = self.config.clone();
        let name = self.name.clone();
        let (draining, drain) = tokio::sync::watch::channel(false);
        self.draining = draining;
        self.server = Some(tokio::spawn(accept(listener, router, config, name, drain)));
    }
}

/// Accepts connections until aborted or told to drain; aborting it drops (closes)
/// every connection it serves, since they live in its `JoinSet`. Draining closes the
/// listener and returns once every connection has ended.
async fn accept(
    listener: TcpListener,
    router: Router,
    config: Arc<ServeConfig>,
    name: String,
    drain: tokio::sync::watch::Receiver<bool>,
) {
    let mut stop = drain.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let open = OpenConnections::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = open.take(peer.ip(), &config) else {
                        tracing::debug!(service = %name, %peer, "too many connections from one address");
                        drop(stream);
                        continue;
                    };
                    let serve = serve_connection(
                        http.clone(), stream, peer, router.clone(), config.idle_timeout,
                        drain.clone(),
                    );
                    connections.spawn(async move {
                        serve.await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of file descriptors, typically: give connections time to close.
                    tracing::warn!(service = %name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = draining(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once the host is told to drain (never, if the host is gone without).
async fn draining(drain: &mut tokio::sync::watch::Receiver<bool>) {
    if drain.wait_for(|&d| d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves one connection until it ends, its headers time out, or nothing moves on it
/// for `idle_timeout`.
async fn serve_connection(
    http: hyper::server::conn::http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    idle_timeout: Duration,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    let activity = Activity::default();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        // What `into_make_service_with_connect_info` gives handlers: the rate limits
        // key on it.
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let connection = http.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let quiet_until = activity.last() + idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(quiet_until) => {
                if activity.last() + idle_timeout <= Instant::now() {
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
            }
            () = self::draining(&mut drain), if !draining => {
                // The answer in flight is finished; no further request is read.
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When bytes last moved on a connection.
#[derive(Debug, Clone)]
struct Activity {
    start: Instant,
    millis: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            millis: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

/// A stream that records its activity.
#[derive(Debug)]
struct Watched {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Open connections per client address.
#[derive(Debug, Clone, Default)]
struct OpenConnections(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl OpenConnections {
    /// A slot for one more connection from `ip`, or `None` when it has its share.
    fn take(&self, ip: IpAddr, config: &ServeConfig) -> Option<Slot> {
        // An IPv4 client of a dual-stack listener is one address, however it came.
        let ip = ip.to_canonical();
        let mut open = self.0.lock();
        let count = open.entry(ip).or_insert(0);
        if let Some(cap) = config.max_connections_per_client
            && *count >= cap
            && !config.uncapped.contains(&ip)
        {
            return None;
        }
        *count += 1;
        Some(Slot {
            open: self.clone(),
            ip,
        })
    }
}

/// One connection's place in [`OpenConnections`], given back when dropped.
#[derive(Debug)]
struct Slot {
    open: OpenConnections,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.0.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A service's routes as served: plus `/healthz`, a problem+json 404 for every other
/// path, and the chaos of `cell` (`slow` delays every request, `flaky` fails a share of
/// them with 503).
pub fn service_router(router: Router, cell: ChaosCell) -> Router {
    router
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { Problem::not_found() })
        .layer(axum::middleware::from_fn_with_state(cell, chaos))
}

/// The chaos setting of one service, shared by its router and the ops controls.
#[derive(Clone, Debug, Default)]
pub struct ChaosCell(Arc<RwLock<Chaos>>);

impl ChaosCell {
    pub fn get(&self) -> Chaos {
        *self.0.read()
    }

    pub fn set(&self, chaos: Chaos) {
        *self.0.write() = chaos;
    }
}

async fn chaos(State(cell): State<ChaosCell>, request: Request, next: Next) -> Response {
    // The levers themselves are never slowed or failed: a service in any state can be
    // healed (it cannot close the listener they come in on, so `down` is a 503 to
    // everything else).
    if is_control(request.uri().path()) {
        return next.run(request).await;
    }
    let chaos = cell.get();
    match chaos.mode {
        ChaosMode::Slow => {
            let latency = Duration::from_millis(chaos.latency_ms.unwrap_or(0));
            tokio::time::sleep(latency).await;
        }
        ChaosMode::Flaky if rand::random::<f64>() < chaos.error_rate.unwrap_or(0.0) => {
            return Problem::service_unavailable(Duration::from_secs(1))
                .with_detail("Injected fault (chaos: flaky).")
                .into_response();
        }
        ChaosMode::Down => {
            return Problem::service_unavailable(Duration::from_secs(1))
                .with_detail("Injected fault (chaos: down).")
                .into_response();
        }
        _ => {}
    }
    next.run(request).await
}

/// Whether `path` is one of the instance's control routes
/// (`/internal/<service>/control…`).
fn is_control(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/');
    segments.next() == Some("internal") && segments.nth(1) == Some("control")
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn host(header_read_timeout: Duration, idle_timeout: Duration) -> Host {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/echo", post(|body: String| async move { body }));
        let config = ServeConfig {
            header_read_timeout,
            idle_timeout,
            ..ServeConfig::default()
        };
        Host::start_with(
            "test",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            router,
            config,
        )
        .await
        .expect("listening")
    }

    /// Reads until the peer closes (EOF or reset) or `limit` passes; when it closed.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<StdInstant> {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(limit, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return StdInstant::now(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .ok()
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_closes_after_the_header_timeout() {
        let timeout = Duration::from_millis(500);
        let host = host(timeout, Duration::from_secs(60)).await;
        let mut stream = TcpStream::connect(host.addr()).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"\r\n\r\nok") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before answering");
            answer.extend_from_slice(&buf[..n]);
        }
        let answered = StdInstant::now();
        let closed = closed_within(&mut stream, timeout * 6)
            .await
            .expect("the idle keep-alive connection was closed");
        let idle = closed - answered;
        assert!(
            idle >= timeout - Duration::from_millis(50),
            "closed after {idle:?}"
        );
    }

    #[tokio::test]
    async fn a_connection_on_which_nothing_moves_is_closed_after_the_idle_timeout() {
        let idle_timeout = Duration::from_millis(500);
        let host = host(Duration::from_secs(30), idle_timeout).await;
        let mut stream = TcpStream::connect(host.addr()).await.expect("connect");
        // Whole headers, then a tenth of the body, then nothing.
        stream
            .write_all(
                b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789",
            )
            .await
            .expect("write");
        let sent = StdInstant::now();
        let closed = closed_within(&mut stream, idle_timeout * 6)
            .await
            .expect("the stalled connection was closed");
        let after = closed - sent;
        assert!(
            after >= idle_timeout - Duration::from_millis(50),
            "closed after {after:?}"
        );
    }
}
