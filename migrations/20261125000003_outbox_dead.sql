-- An event that the broker keeps refusing is parked here instead of blocking everyone:
-- it and its user's later events wait (in order) until an operator resets dead_at.
-- The index finds a user's earlier pending events, which hold back the later ones.
ALTER TABLE outbox ADD COLUMN dead_at timestamptz;
CREATE INDEX outbox_pending_user_idx ON outbox (user_id, id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- json, not jsonb: the event is published byte for byte as it was written, keys in order.
ALTER TABLE outbox ALTER COLUMN payload TYPE json;
