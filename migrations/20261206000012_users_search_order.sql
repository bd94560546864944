-- users.search at scale. A page reads each group in an order an index holds, and stops
-- after its last row instead of sorting every match.
--
-- Names starting with the query, by (name_key, id), byte-wise whatever the database's
-- collation: this index serves the prefix's range and that order (it replaces the
-- prefix-only index).
DROP INDEX IF EXISTS users_name_key_prefix_idx;
CREATE INDEX users_name_key_order_idx ON users ((name_key COLLATE "C"), id)
    WHERE deleted_at IS NULL;
-- Names containing the query after their first character (so not only at their start),
-- newest first. Two ways to find them, and no statistics can tell which is cheaper for a
-- query (its characters may be common while the names holding them are few), so the search
-- tries the first and falls back to the second:
-- * walk the newest users by id, testing each name (an index holding both, read without
--   the table), until enough are found: cheap when many names hold the query;
-- * else take every name holding it from a trigram index of the name past its first
--   character, and sort them: cheap when few do, which the failed walk has shown.
DROP INDEX IF EXISTS users_name_key_trgm_idx;
CREATE INDEX users_name_inside_trgm_idx ON users USING gin (substr(name_key, 2) gin_trgm_ops)
    WHERE deleted_at IS NULL;
CREATE INDEX users_live_id_name_idx ON users (id) INCLUDE (name_key) WHERE deleted_at IS NULL;

-- The privacy rules of a search by name, in one place for both ways.
CREATE FUNCTION users_findable(u users, friends boolean) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT u.privacy_settings->>'profileVisibility' IS DISTINCT FROM 'private'
       AND (NOT friends OR u.privacy_settings->>'allowFriendRequests' IS DISTINCT FROM 'false')
$$;

-- The first way: up to `lim` users among the `budget` newest below `below`. The planner's
-- settings keep it to the index walk whatever it estimates.
CREATE FUNCTION users_inside_walk(pattern text, key text, below uuid, friends boolean,
                                  lim integer, budget integer)
RETURNS SETOF users LANGUAGE sql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_hashjoin = off
SET enable_mergejoin = off SET enable_sort = off
AS $$
    SELECT u.* FROM (SELECT id, name_key FROM users WHERE deleted_at IS NULL AND id < below
                      ORDER BY id DESC LIMIT budget) newest
      JOIN users u ON u.id = newest.id
     WHERE substr(newest.name_key, 2) LIKE pattern AND NOT starts_with(newest.name_key, key)
       AND users_findable(u, friends)
     ORDER BY newest.id DESC LIMIT lim
$$;

-- The second way: the newest `lim` below `below`, from the trigram index.
CREATE FUNCTION users_inside_by_trigram(pattern text, key text, below uuid, friends boolean,
                                        lim integer)
RETURNS SETOF users LANGUAGE sql STABLE
SET enable_seqscan = off SET enable_indexscan = off SET enable_indexonlyscan = off
AS $$
    SELECT * FROM users u
     WHERE deleted_at IS NULL AND substr(name_key, 2) LIKE pattern AND id < below
       AND NOT starts_with(name_key, key) AND users_findable(u, friends)
     ORDER BY id DESC LIMIT lim
$$;
