-- The outbox is a queue: each event is inserted, updated once when published, and deleted
-- after the retention. With the default settings (vacuum once a fifth of the table is dead),
-- a burst of writes leaves every published event's old entry in the pending-events index
-- until vacuum comes, and each poll of the publisher reads through them: 200 ms a poll after
-- 400,000 creates, with nothing pending. Vacuumed after every 5,000 changes instead.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);
