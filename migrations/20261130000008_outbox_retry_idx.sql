-- The publisher asks, each time it goes idle, when the next refused event falls due. Over the
-- pending-events index that read passed every published event's dead entry; this index holds
-- only the events waiting for a retry, which are few.
CREATE INDEX outbox_retry_idx ON outbox (next_attempt_at)
    WHERE published_at IS NULL AND dead_at IS NULL AND next_attempt_at IS NOT NULL;
