-- The request (RPC message id or Idempotency-Key) that deleted a user, and the last one that
-- changed it: the same request delivered again answers as the first delivery did, without a
-- second change or a second event.
ALTER TABLE users ADD COLUMN deleted_by text, ADD COLUMN last_request_key text;
