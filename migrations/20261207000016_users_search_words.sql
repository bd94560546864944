-- users.search's names containing the query, found whole when the query spans two words.
--
-- The trigram index splits names into words at spaces and punctuation, so a query such as
-- `s mi` (Boris Miller) or `n-lu` (Jean-Luc) gave it no trigram to narrow by: such queries
-- were looked for among the 20 000 newest users only. The index now holds each name with
-- its word separators turned into one letter-like mark (`0`), so `s mi` is sought as `s0mi`,
-- whose trigrams `s0m` and `0mi` hold it exactly. The mark makes the index find a superset
-- (a name holding `s0mi` itself, or `s-mi`); each name found is tested with the query as it
-- is.
--
-- The walk of the newest users also goes further before turning to the index when it has
-- found some (the query is not rare, and the index would hand over every one of its holders,
-- each a read of the table: at a million users about 9 µs a row against 0.07 µs a name
-- walked; measured with scripts/seed-users.sh, see docs/performance.md). A query the first
-- walk found nothing for is rare, and the index gives its few holders at once.
CREATE FUNCTION users_name_words(name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT translate(name, ' -''.', '0000') $$;

DROP INDEX users_name_inside_trgm_idx;
CREATE INDEX users_name_inside_words_idx ON users
    USING gin (users_name_words(substr(name_key, 2)) gin_trgm_ops)
    WHERE deleted_at IS NULL;

-- Up to `lim` users below `below`, newest first, whose name contains `key` after its first
-- character: those among the `walk` newest; when they are fewer than `lim`, those among the
-- `further` next, unless the first walk found none and the query is strong (three letters,
-- digits or marks together); when still fewer and the query is strong, the older ones from
-- users_name_inside_words_idx. A weak query gives the index nothing to narrow by: it is
-- looked for in the walks only. The settings fix each statement's plan, whatever the planner
-- estimates (the function's SET clauses also scope the changes made inside it).
CREATE FUNCTION users_search_inside(key text, below uuid, friends boolean, lim integer,
                                    walk integer, further integer)
RETURNS SETOF users LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET enable_bitmapscan = off SET enable_sort = off
SET enable_indexscan = on SET enable_indexonlyscan = on
AS $$
DECLARE
    hit users;
    n integer := 0;
    budget integer;
    words text := users_name_words(key);
    strong boolean := words ~ '[[:alnum:]]{3}';
BEGIN
    FOREACH budget IN ARRAY ARRAY[walk, further] LOOP
        FOR hit IN
            SELECT u.* FROM (SELECT id, name_key FROM users
                              WHERE deleted_at IS NULL AND id < below
                              ORDER BY id DESC LIMIT budget) newest
              JOIN users u ON u.id = newest.id
             WHERE strpos(newest.name_key, key) > 1 AND users_findable(u, friends)
             ORDER BY newest.id DESC LIMIT lim - n
        LOOP
            RETURN NEXT hit;
            n := n + 1;
            below := hit.id;
        END LOOP;
        EXIT WHEN n >= lim OR (n = 0 AND strong);
    END LOOP;
    IF n < lim AND strong THEN
        -- The walks saw every user of their budgets: the rest are older than the last find.
        PERFORM set_config('enable_bitmapscan', 'on', true), set_config('enable_sort', 'on', true),
                set_config('enable_indexscan', 'off', true),
                set_config('enable_indexonlyscan', 'off', true);
        RETURN QUERY
            SELECT * FROM users u
             WHERE deleted_at IS NULL
               AND users_name_words(substr(name_key, 2)) LIKE
                   '%' || replace(replace(replace(words, '\', '\\'), '%', '\%'), '_', '\_') || '%'
               AND id < below AND strpos(name_key, key) > 1 AND users_findable(u, friends)
             ORDER BY id DESC LIMIT lim - n;
    END IF;
END
$$;

-- The previous signature, for instances of the previous build during a rolling upgrade.
CREATE OR REPLACE FUNCTION users_search_inside(pattern text, key text, below uuid,
                                               friends boolean, lim integer, budget integer,
                                               strong boolean)
RETURNS SETOF users LANGUAGE sql STABLE
AS $$ SELECT * FROM users_search_inside(key, below, friends, lim, budget, budget) $$;
