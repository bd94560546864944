-- The W3C trace a change was part of: its events are published with these as their
-- `traceparent` and `tracestate` headers (a consumer continues the trace), and its history
-- entries keep the trace id.
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
