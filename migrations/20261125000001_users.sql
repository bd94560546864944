-- Users, their payments and the transactional outbox of domain events.

CREATE TABLE users (
    id                uuid PRIMARY KEY,
    -- Stored lower-case; uniqueness among live users is enforced by users_email_live_key.
    email             text        NOT NULL,
    name              text        NOT NULL,
    password_hash     text        NOT NULL,
    avatar_url        text,
    is_active         boolean     NOT NULL DEFAULT true,
    last_login_at     timestamptz,
    last_login_ip     text,
    -- Sub-documents are stored as validated; defaults are filled in on read.
    preferences       jsonb       NOT NULL DEFAULT '{}',
    privacy_settings  jsonb       NOT NULL DEFAULT '{}',
    billing_info      jsonb,
    last_payment_at   timestamptz,
    -- Money in minor units (kopecks): exact integer arithmetic.
    total_spent_minor bigint      NOT NULL DEFAULT 0 CHECK (total_spent_minor >= 0),
    payments_count    bigint      NOT NULL DEFAULT 0 CHECK (payments_count >= 0),
    metadata          jsonb       NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: a deleted user is invisible and its email is free again.
    deleted_at        timestamptz
);

CREATE UNIQUE INDEX users_email_live_key ON users (lower(email)) WHERE deleted_at IS NULL;

-- Every recorded payment, so that recording one is idempotent on its id.
CREATE TABLE payments (
    payment_id   text        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id),
    amount_minor bigint      NOT NULL CHECK (amount_minor > 0),
    currency     text        NOT NULL,
    paid_at      timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payments_user_idx ON payments (user_id);

-- Domain events, written in the same transaction as the change they describe.
CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    user_id      uuid        NOT NULL,
    event_type   text        NOT NULL,
    routing_key  text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);

CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;
