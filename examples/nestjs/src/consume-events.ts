// A NestJS RMQ microservice consuming user-service's events: `node dist/consume-events.js`.
// Its own durable queue is bound to the events exchange with the @EventPattern patterns as
// routing keys (user.created, user.preferences_changed, user.*). Prints one JSON line per event.
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { MicroserviceOptions, Transport } from '@nestjs/microservices';

import { EventsModule } from './events/events.module';

async function main(): Promise<void> {
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(EventsModule, {
    transport: Transport.RMQ,
    options: {
      urls: (process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672').split(','),
      queue: process.env.EVENTS_QUEUE ?? 'my-service.user-events',
      queueOptions: { durable: true },
      // Bind the queue to user-service's topic exchange (declared durable, as the service
      // declares it); `wildcards` binds one routing key per @EventPattern and lets a
      // pattern hold * and #.
      exchange: process.env.EVENTS_EXCHANGE ?? 'user-service.events',
      exchangeType: 'topic',
      wildcards: true,
      noAck: false,
    },
    logger: ['error', 'warn'],
  });
  app.enableShutdownHooks();
  await app.listen();
  console.log(JSON.stringify({ listening: true }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
