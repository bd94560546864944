-- users.list walks users newest first by (created_at, id), a page at a time (keyset).
CREATE INDEX users_created_id_idx ON users (created_at DESC, id DESC);
