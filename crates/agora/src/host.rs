//! One service's HTTP listener on 127.0.0.1, which can be taken down and brought back
//! on the same port (`down` means connections refused, as if the process were gone).

use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;

use agora_gateway::{Chaos, ChaosMode};
use agora_httpkit::Problem;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A service router served on its own port.
#[derive(Debug)]
pub struct Host {
    name: String,
    addr: SocketAddr,
    router: Router,
    server: Option<JoinHandle<()>>,
}

impl Host {
    /// Serves `router` as it is on `addr`; port 0 picks a free one.
    pub async fn start(name: &str, addr: SocketAddr, router: Router) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut host = Self {
            name: name.to_owned(),
            addr,
            router,
            server: None,
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

    pub fn is_up(&self) -> bool {
        self.server.is_some()
    }

    /// Closes the listener and every open connection at once.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
            tracing::info!(service = %self.name, "listener down");
        }
    }

    /// Listens again on the same address.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        if self.server.is_none() {
            let listener = TcpListener::bind(self.addr).await?;
            self.serve(listener);
            tracing::info!(service = %self.name, "listener up");
        }
        Ok(())
    }

    fn serve(&mut self, listener: TcpListener) {
        let service = self
            .router
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let name = self.name.clone();
        self.server = Some(tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, service).await {
                tracing::error!(service = %name, %error, "listener failed");
            }
        }));
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
        _ => {}
    }
    next.run(request).await
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
