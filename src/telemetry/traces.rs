//! OpenTelemetry traces: the existing `tracing` spans exported over OTLP/HTTP (protobuf)
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nothing at all when it is not.
//!
//! The subscriber is process-global, so the exporter is too: `init_tracing` installs it once,
//! from the first configuration it sees (the binary has one; a test binary that wants traces
//! starts one receiver for the whole process, see `tests/traces/`). The suite's other servers
//! share a process with no subscriber and are unaffected. Spans below the request span are
//! at DEBUG (`sea_orm`'s statement spans at INFO) and only the OpenTelemetry layer enables
//! them: without it their callsites are disabled once, so a cache hit creates no span.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;

use crate::config::{Config, TraceSampler};

/// The spans the OpenTelemetry layer records: this crate's from DEBUG (the request, parse,
/// execution, cache lookups, backend calls, DataLoader batches, edge purges) and sea-orm's
/// statement spans. Events within them become span events at INFO and above.
pub fn span_filter() -> Targets {
    Targets::new()
        .with_target("catalog_api", tracing::Level::DEBUG)
        .with_target("sea_orm::database", tracing::Level::INFO)
}

/// The exporter failed to start: the endpoint is not a URL the client accepts.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OpenTelemetry exporter: {0}")]
pub struct ExporterError(String);

/// A tracer provider exporting to `OTEL_EXPORTER_OTLP_ENDPOINT`'s `/v1/traces`, or `None`
/// when no endpoint is configured.
pub fn tracer_provider(config: &Config) -> Result<Option<SdkTracerProvider>, ExporterError> {
    let Some(endpoint) = config.otel_exporter_otlp_endpoint.as_deref() else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| ExporterError(error.to_string()))?;
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(config.otel_bsp_schedule_delay_ms))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(config))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(config.otel_service_name.clone())
                .build(),
        )
        .build();
    Ok(Some(provider))
}

/// The signal URL the specification derives from `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// `OTEL_TRACES_SAMPLER` and its argument (a ratio; 1 when unset), as the SDK's sampler.
pub fn sampler(config: &Config) -> Sampler {
    let ratio = config.otel_traces_sampler_arg.unwrap_or(1.0);
    match config.otel_traces_sampler {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TraceSampler::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TraceSampler::ParentbasedTraceIdRatio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

/// The OpenTelemetry layer over `provider`'s tracer.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("catalog-api"))
        .with_tracked_inactivity(false)
}

/// Makes `span` (a request's) continue the trace a client's W3C `traceparent` names. Called
/// only when traces are exported: the extraction allocates.
pub fn continue_client_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only for a span the layer does not know, which `is_disabled` ruled out.
    let _ = span.set_parent(parent);
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_the_endpoint_with_the_signal_path() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
    }

    #[test]
    fn the_sampler_follows_the_standard_variables() {
        let mut config = Config::for_database("sqlite::memory:");
        assert!(matches!(sampler(&config), Sampler::ParentBased(_)));
        config.otel_traces_sampler = TraceSampler::TraceIdRatio;
        config.otel_traces_sampler_arg = Some(0.01);
        assert!(matches!(sampler(&config), Sampler::TraceIdRatioBased(ratio) if ratio == 0.01));
        config.otel_traces_sampler = TraceSampler::AlwaysOff;
        assert!(matches!(sampler(&config), Sampler::AlwaysOff));
    }
}
