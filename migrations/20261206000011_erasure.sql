-- users.erase destroys a user's personal data and keeps the row: its id, its dates and its
-- payment totals (accounting). erased_at says the rest is gone; such a row is never read as
-- a user again, and cannot be restored.
ALTER TABLE users ADD COLUMN erased_at timestamptz;
-- A stored reply names the user its write was about, so that an erase finds the replies that
-- hold the user's data. Replies about several users or none (batch creates, and rows written
-- before this column) are few, and an erase searches them for the user's id and e-mail.
ALTER TABLE applied_requests ADD COLUMN user_id uuid;
CREATE INDEX applied_requests_user_idx ON applied_requests (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX applied_requests_unowned_idx ON applied_requests (created_at) WHERE user_id IS NULL;
-- An erase deletes every event of the user, published or not.
CREATE INDEX outbox_user_idx ON outbox (user_id);
-- Background erasure (ERASE_DELETED_AFTER_DAYS) finds the users deleted long enough ago.
CREATE INDEX users_unerased_deleted_idx ON users (deleted_at)
    WHERE deleted_at IS NOT NULL AND erased_at IS NULL;
