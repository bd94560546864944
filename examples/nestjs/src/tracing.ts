// OpenTelemetry for the NestJS callers: traces only, exported over OTLP/HTTP (protobuf), with
// the amqplib instrumentation, so that every message a ClientProxy publishes gets a PRODUCER
// span ("publish <default>") and a W3C `traceparent` in its AMQP headers, which user-service
// continues.
//
// It has to run before amqplib is loaded (the instrumentation patches amqplib's files as they
// are required): import it first in the entry file (`import './tracing';` above everything
// else, as src/traced-call.ts does), or preload it: `node -r ./dist/tracing.js dist/app.js`.
//
// Standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318; spans go to
// <endpoint>/v1/traces; OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the full URL if set),
// OTEL_SERVICE_NAME (default `nestjs-caller`), OTEL_RESOURCE_ATTRIBUTES.
import { trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { AmqplibInstrumentation } from '@opentelemetry/instrumentation-amqplib';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

export const DEFAULT_SERVICE_NAME = 'nestjs-caller';

const resource = defaultResource()
  .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: DEFAULT_SERVICE_NAME }))
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
  .merge(detectResources({ detectors: [envDetector] }));

const provider = new NodeTracerProvider({
  resource,
  // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT itself and appends /v1/traces.
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
});

// Global tracer provider, the AsyncLocalStorage context manager (the active span follows
// async/await), and the W3C trace-context propagator (`traceparent`/`tracestate`).
provider.register({ propagator: new W3CTraceContextPropagator() });

registerInstrumentations({
  tracerProvider: provider,
  instrumentations: [new AmqplibInstrumentation()],
});

/** The tracer of the caller's own spans. */
export function tracer() {
  return trace.getTracer(process.env.OTEL_SERVICE_NAME || DEFAULT_SERVICE_NAME);
}

let shutdown: Promise<void> | undefined;

/**
 * Exports the spans still buffered and shuts the provider down; call it (once is enough, it
 * is idempotent) before the process exits. Resolves even when no collector answers, after at
 * most `timeoutMs`.
 */
export function shutdownTracing(timeoutMs = 5_000): Promise<void> {
  shutdown ??= new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    timer.unref();
    provider
      .shutdown()
      .catch((err) => console.error('OpenTelemetry shutdown failed:', err))
      .finally(() => {
        clearTimeout(timer);
        resolve();
      });
  });
  return shutdown;
}
