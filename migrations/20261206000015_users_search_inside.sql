-- users.search's names containing the query, in one PL/pgSQL function, so that each
-- connection plans its two statements once (SQL functions with settings are planned again
-- on every call), and a name is tested with one strpos instead of substr, LIKE and
-- starts_with (two thirds of a walk's time at a million users). The order and the two ways
-- are those of 20261206000012_users_search_order.sql, now joined: the walk's finds, then,
-- when it found too few and the query is strong, the older ones from the trigram index.
DROP FUNCTION users_inside_walk(text, text, uuid, boolean, integer, integer);
DROP FUNCTION users_inside_by_trigram(text, text, uuid, boolean, integer);

-- Up to `lim` users below `below`, newest first, whose name contains `key` after its first
-- character (`pattern` is `%key%` for LIKE): those among the `budget` newest, and when they
-- are fewer than `lim` and `strong`, older ones from users_name_inside_trgm_idx. The
-- settings fix each statement's plan, whatever the planner estimates (the function's SET
-- clauses also scope the changes made inside it).
CREATE FUNCTION users_search_inside(pattern text, key text, below uuid, friends boolean,
                                    lim integer, budget integer, strong boolean)
RETURNS SETOF users LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET enable_bitmapscan = off SET enable_sort = off
SET enable_indexscan = on SET enable_indexonlyscan = on
AS $$
DECLARE
    hit users;
    n integer := 0;
BEGIN
    FOR hit IN
        SELECT u.* FROM (SELECT id, name_key FROM users WHERE deleted_at IS NULL AND id < below
                          ORDER BY id DESC LIMIT budget) newest
          JOIN users u ON u.id = newest.id
         WHERE strpos(newest.name_key, key) > 1 AND users_findable(u, friends)
         ORDER BY newest.id DESC LIMIT lim
    LOOP
        RETURN NEXT hit;
        n := n + 1;
        below := hit.id;
    END LOOP;
    IF n < lim AND strong THEN
        -- The walk saw every user of its budget: the rest are older than its last find.
        PERFORM set_config('enable_bitmapscan', 'on', true), set_config('enable_sort', 'on', true),
                set_config('enable_indexscan', 'off', true),
                set_config('enable_indexonlyscan', 'off', true);
        RETURN QUERY
            SELECT * FROM users u
             WHERE deleted_at IS NULL AND substr(name_key, 2) LIKE pattern AND id < below
               AND NOT starts_with(name_key, key) AND users_findable(u, friends)
             ORDER BY id DESC LIMIT lim - n;
    END IF;
END
$$;
