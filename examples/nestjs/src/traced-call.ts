// A traced call of user-service: `node dist/traced-call.js EMAIL`. Inside one span of its own,
// `traced-call`, it creates a user through UsersService (a ClientProxy over RabbitMQ) and reads
// it back. The amqplib instrumentation makes each RPC message a child PRODUCER span of it and
// puts that span's `traceparent` in the message headers, so user-service's spans join the trace.
// Prints one JSON line, {traceId, spanId, created, fetched}, after the spans were exported.
//
// First import: OpenTelemetry must be set up before anything loads amqplib.
import { shutdownTracing, tracer } from './tracing';

import 'reflect-metadata';
import { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { SpanStatusCode } from '@opentelemetry/api';

import { UsersModule } from './users/users.module';
import { User, UsersService, isUserServiceError } from './users/users.service';

const PASSWORD_HASH = '$2b$10$abcdefghijklmnopqrstuv'; // hashed by the caller, never plain

/** An error as the JSON line shows it: user-service's {status, code, message}, or name/message. */
function describe(err: unknown): { error: Record<string, unknown> } {
  if (isUserServiceError(err)) {
    return { error: { status: err.status, code: err.code, message: err.message } };
  }
  if (err instanceof Error) {
    return { error: { name: err.name, message: err.message } };
  }
  return { error: { message: String(err) } };
}

async function main(): Promise<void> {
  const email = process.argv[2] ?? `nest.traced.${Date.now()}@example.com`;
  let app: INestApplicationContext | undefined;

  const result = await tracer().startActiveSpan('traced-call', async (span) => {
    const { traceId, spanId } = span.spanContext();
    let created: User | { error: Record<string, unknown> };
    let fetched: User | null | { error: Record<string, unknown> } | undefined;
    try {
      app = await NestFactory.createApplicationContext(UsersModule, { logger: ['error', 'warn'] });
      const users = app.get(UsersService);
      // Each RPC times out after 3 s (UsersService), so this ends without a service too.
      const user = await users.create('Traced User', email, PASSWORD_HASH);
      created = user;
      try {
        fetched = await users.findById(user.id);
      } catch (err) {
        fetched = describe(err);
      }
    } catch (err) {
      created = describe(err);
      span.recordException(err instanceof Error ? err : String(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
    } finally {
      span.end();
    }
    return { traceId, spanId, created, fetched };
  });

  await app?.close().catch(() => undefined);
  await shutdownTracing(); // export the spans before printing and exiting
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

main().catch(async (err) => {
  console.error(err);
  await shutdownTracing();
  process.exit(1);
});
