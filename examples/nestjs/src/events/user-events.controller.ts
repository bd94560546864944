import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, Payload, RmqContext } from '@nestjs/microservices';

/** An event of user-service (published with EVENT_ENVELOPE=nestjs). */
export interface UserEvent<D = unknown> {
  eventId: string; // also the AMQP message_id: deduplicate on it (delivery is at-least-once)
  type: string; // USER_CREATED, PREFERENCES_CHANGED, ...
  userId: string;
  timestamp: string;
  correlationId: string;
  source: string;
  data: D;
}

export interface Diff {
  changed: string[];
  previous: Record<string, unknown>;
  current: Record<string, unknown>;
}

@Controller()
export class UserEventsController {
  @EventPattern('user.created')
  onUserCreated(@Payload() event: UserEvent<{ name: string; email: string }>, @Ctx() ctx: RmqContext): void {
    this.handled('user.created', event, ctx);
  }

  @EventPattern('user.preferences_changed')
  onPreferencesChanged(@Payload() event: UserEvent<Diff>, @Ctx() ctx: RmqContext): void {
    this.handled('user.preferences_changed', event, ctx);
  }

  // Every other user.* event (user.updated, user.deleted, user.logged_in, ...).
  @EventPattern('user.*')
  onOtherUserEvent(@Payload() event: UserEvent, @Ctx() ctx: RmqContext): void {
    this.handled(ctx.getPattern(), event, ctx);
  }

  private handled(pattern: string, event: UserEvent, ctx: RmqContext): void {
    console.log(JSON.stringify({ pattern, event }));
    // noAck: false, so acknowledge once handled: an event is not lost if this service stops.
    ctx.getChannelRef().ack(ctx.getMessage());
  }
}
