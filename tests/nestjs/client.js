// A stock NestJS ClientProxy over RabbitMQ calling user-service, as a platform service would.
// Driven by tests/api/nestjs.rs: env AMQP_URL, RPC_QUEUE, API_KEY, EMAIL. Prints one JSON line.
'use strict';
require('reflect-metadata');
const { ClientProxyFactory, Transport } = require('@nestjs/microservices');
const { firstValueFrom } = require('rxjs');

const timer = setTimeout(() => {
  console.error('timed out');
  process.exit(1);
}, 20000);

async function main() {
  const client = ClientProxyFactory.create({
    transport: Transport.RMQ,
    options: {
      urls: [process.env.AMQP_URL],
      queue: process.env.RPC_QUEUE,
      // Asserted as the service declares it (RPC_QUEUE_TYPE classic or quorum).
      queueOptions:
        process.env.RPC_QUEUE_TYPE === 'quorum'
          ? { durable: true, arguments: { 'x-queue-type': 'quorum' } }
          : { durable: true },
      headers: { 'x-api-key': process.env.API_KEY },
    },
  });
  await client.connect();
  const send = (pattern, data) => firstValueFrom(client.send(pattern, data));

  const created = await send('users.create', {
    name: 'Nest User',
    email: process.env.EMAIL,
    password: '$2b$10$abcdefghijklmnopqrstuv',
  });
  const fetched = await send('users.get', { id: created.id });
  const prefs = await send('users.updatePreferences', { id: created.id, language: 'en' });
  const exists = await send('users.exists', { id: created.id });
  let notFoundError = null;
  try {
    await send('users.get', { id: '6f9619ff-8b86-4011-b42d-00c04fc964ff' });
  } catch (err) {
    notFoundError = err;
  }
  await firstValueFrom(client.emit('users.recordLogin', { id: created.id, ipAddress: '10.0.0.1' }), {
    defaultValue: undefined,
  });
  console.log(JSON.stringify({ created, fetched, prefs, exists, notFoundError }));
  await client.close();
  clearTimeout(timer);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : JSON.stringify(err));
  process.exit(1);
});
