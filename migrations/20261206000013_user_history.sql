-- users.history: every change to a user, written with the change's events (in the same
-- statement, so in its transaction), kept AUDIT_RETENTION_DAYS whatever the outbox keeps.
-- An entry holds its event's data: a billing change by its paths only, never its values.
-- An erasure deletes the user's entries; its own entry (USER_ERASED, no personal data) stays.
CREATE TABLE user_history (
    id             bigserial   PRIMARY KEY,
    user_id        uuid        NOT NULL,
    event_type     text        NOT NULL,
    -- json, not jsonb: given back as it was written, keys in order.
    data           json        NOT NULL,
    actor          text        NOT NULL,
    correlation_id text        NOT NULL,
    -- The W3C trace the change was part of, once the service reads one.
    trace_id       text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_history_user_idx ON user_history (user_id, id);
CREATE INDEX user_history_created_idx ON user_history (created_at);
