//! The process's tracer, as `agora up` and `agora run` set it up (see
//! [`agora_telemetry::trace`]): `agora up` keeps the last spans in memory for the ops
//! console's waterfall; both export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, and nowhere otherwise.

use agora_telemetry::trace::{ExportSettings, TraceConfig, Tracing, recent};
use anyhow::Context as _;

use crate::runtime::ServiceName;

/// Reads the `OTEL_*` variables now (a bad value is refused before anything starts)
/// and returns what installs the tracer: call it inside the Tokio runtime. `service`:
/// the one service of an `agora run` process; `None` for the whole shop (`agora up`),
/// which also keeps [`recent::DEFAULT_CAPACITY`] spans in memory.
pub fn install(
    service: Option<ServiceName>,
) -> anyhow::Result<impl FnOnce() -> anyhow::Result<Tracing>> {
    let export = ExportSettings::from_env().map_err(anyhow::Error::msg)?;
    let config = TraceConfig {
        service: service.map(|s| s.as_str().to_owned()),
        keep_recent: service.is_none().then_some(recent::DEFAULT_CAPACITY),
        export,
    };
    Ok(move || {
        agora_telemetry::trace::install(config)
            .map_err(anyhow::Error::msg)
            .context("traces")
    })
}
