-- One ledger of the writes that carried a request key (RPC message id or Idempotency-Key,
-- scoped to the caller): the key, a fingerprint of what was asked, and the reply given. The
-- same request delivered again is answered from here and changes nothing; the same key with
-- other content is refused. Rows older than IDEMPOTENCY_RETENTION_HOURS are pruned.
CREATE TABLE applied_requests (
    request_key text        PRIMARY KEY,
    method      text        NOT NULL,
    -- SHA-256 (hex) of the method name and the canonical form of the request.
    fingerprint text        NOT NULL,
    status      smallint    NOT NULL,
    -- json, not jsonb: the reply is given again byte for byte, keys in order.
    body        json        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX applied_requests_created_idx ON applied_requests (created_at);

-- The three mechanisms the ledger replaces.
DROP INDEX IF EXISTS users_request_key_idx;
ALTER TABLE users DROP COLUMN request_key, DROP COLUMN deleted_by, DROP COLUMN last_request_key;
