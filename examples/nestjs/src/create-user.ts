// Creates a user through UsersService (a ClientProxy over RabbitMQ), reads it back, and shows
// the error replies: `node dist/create-user.js EMAIL`. Prints one JSON line.
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';

import { UsersModule } from './users/users.module';
import { UsersService, isUserServiceError } from './users/users.service';

const PASSWORD_HASH = '$2b$10$abcdefghijklmnopqrstuv'; // hashed by the caller, never plain

async function main(): Promise<void> {
  const email = process.argv[2] ?? `nest.${Date.now()}@example.com`;
  const app = await NestFactory.createApplicationContext(UsersModule, { logger: ['error', 'warn'] });
  const users = app.get(UsersService);

  const created = await users.create('Nest User', email, PASSWORD_HASH);
  const fetched = await users.findById(created.id);
  const preferences = await users.updatePreferences(created.id, { language: 'en' });
  const missing = await users.findById('6f9619ff-8b86-4011-b42d-00c04fc964ff');
  let duplicate: { status: number; code: string } | null = null;
  try {
    await users.create('Nest Twin', email, PASSWORD_HASH);
  } catch (err) {
    if (!isUserServiceError(err)) throw err;
    duplicate = { status: err.status, code: err.code }; // 409 EMAIL_TAKEN
  }

  console.log(JSON.stringify({ created, fetched, preferences, missing, duplicate }));
  await app.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
