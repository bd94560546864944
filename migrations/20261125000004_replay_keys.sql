-- The request (RPC message id or Idempotency-Key) that deleted a user, and the one that
-- recorded its last login: the same request delivered again answers as the first delivery
-- did, without a second change or a second event.
ALTER TABLE users ADD COLUMN deleted_by text, ADD COLUMN last_login_key text;
