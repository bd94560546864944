import { Module } from '@nestjs/common';
import { ClientsModule, Transport } from '@nestjs/microservices';

import { USER_SERVICE, UsersService } from './users.service';

const apiKey = process.env.USER_SERVICE_API_KEY;

@Module({
  imports: [
    ClientsModule.register([
      {
        name: USER_SERVICE,
        transport: Transport.RMQ,
        options: {
          urls: (process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672').split(','),
          queue: process.env.RPC_QUEUE ?? 'user-service.rpc',
          // As user-service declares it: durable, no arguments (RPC_QUEUE_TYPE=classic), or
          // a quorum queue (RPC_QUEUE_TYPE=quorum).
          queueOptions:
            process.env.RPC_QUEUE_TYPE === 'quorum'
              ? { durable: true, arguments: { 'x-queue-type': 'quorum' } }
              : { durable: true },
          // Credentials travel in message headers. Without a key, a user-service in local
          // open mode still answers callers on a loopback broker.
          headers: apiKey ? { 'x-api-key': apiKey } : {},
        },
      },
    ]),
  ],
  providers: [UsersService],
  exports: [UsersService],
})
export class UsersModule {}
