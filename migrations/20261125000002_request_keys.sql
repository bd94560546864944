-- The request (RPC message id or Idempotency-Key) that created a user: a create delivered
-- twice answers with the user the first delivery created.
ALTER TABLE users ADD COLUMN request_key text;
CREATE INDEX users_request_key_idx ON users (request_key) WHERE request_key IS NOT NULL;
