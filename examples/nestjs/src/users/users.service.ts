import { Inject, Injectable, OnModuleInit } from '@nestjs/common';
import { ClientProxy } from '@nestjs/microservices';
import { firstValueFrom, timeout } from 'rxjs';

export const USER_SERVICE = 'USER_SERVICE';

/** A user as user-service returns it (public view, defaults filled in). */
export interface User {
  id: string;
  name: string;
  email: string;
  avatarUrl: string | null;
  isActive: boolean;
  createdAt: string;
  updatedAt: string;
  [field: string]: unknown;
}

/** An error reply of user-service, as a ClientProxy rejects with it. */
export interface UserServiceError {
  status: number;
  code: string; // USER_NOT_FOUND, EMAIL_TAKEN, VALIDATION_FAILED, ...
  message: string;
  details?: unknown;
}

export function isUserServiceError(err: unknown): err is UserServiceError {
  const e = err as Partial<UserServiceError> | null;
  return typeof e === 'object' && e !== null && typeof e.code === 'string' && typeof e.status === 'number';
}

@Injectable()
export class UsersService implements OnModuleInit {
  constructor(@Inject(USER_SERVICE) private readonly client: ClientProxy) {}

  async onModuleInit(): Promise<void> {
    await this.client.connect();
  }

  create(name: string, email: string, passwordHash: string): Promise<User> {
    return this.send<User>('users.create', { name, email, password: passwordHash });
  }

  /** The user, or null when there is none (user-service answers USER_NOT_FOUND). */
  async findById(id: string): Promise<User | null> {
    try {
      return await this.send<User>('users.get', { id });
    } catch (err) {
      if (isUserServiceError(err) && err.code === 'USER_NOT_FOUND') {
        return null;
      }
      throw err;
    }
  }

  /** A JSON merge patch of the preferences; answers the full preferences after it. */
  updatePreferences(id: string, patch: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.send('users.updatePreferences', { ...patch, id });
  }

  private send<T>(pattern: string, data: object): Promise<T> {
    return firstValueFrom(this.client.send<T>(pattern, data).pipe(timeout(3000)));
  }
}
