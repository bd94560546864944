-- users.search: a name's search key (lower case, ё as е), found by its start (B-tree) and
-- by a substring (trigrams), among live users.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
ALTER TABLE users
    ADD COLUMN name_key text GENERATED ALWAYS AS (translate(lower(name), 'ё', 'е')) STORED;
CREATE INDEX users_name_key_prefix_idx ON users (name_key text_pattern_ops)
    WHERE deleted_at IS NULL;
CREATE INDEX users_name_key_trgm_idx ON users USING gin (name_key gin_trgm_ops)
    WHERE deleted_at IS NULL;
