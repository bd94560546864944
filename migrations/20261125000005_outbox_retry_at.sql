-- A refused event is retried after a growing delay of its own; until then the publisher passes
-- over it (and its user's later events, which keep their order), and every other event flows.
-- A dead event (dead_at set) is set aside for itself alone: it no longer holds anything back.
ALTER TABLE outbox ADD COLUMN next_attempt_at timestamptz;
