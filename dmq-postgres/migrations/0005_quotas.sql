-- Enqueue quotas (`dmq quota set`): how many jobs the schema's namespace, or one key of
-- it (a tenant), may enqueue per period, counted in fixed windows that open with the
-- first enqueue counted. Run with the schema first on the search_path, as 0001 is.

CREATE TABLE quotas (
    -- '*' for the namespace's own quota, 'k:<key>' for a key's.
    key         text PRIMARY KEY,
    count       bigint NOT NULL CHECK (count > 0),
    period_ms   bigint NOT NULL CHECK (period_ms > 0),
    -- Enqueues counted in the window that ends at window_ends (NULL: none open).
    used        bigint NOT NULL DEFAULT 0,
    window_ends timestamptz
);

-- Counts `p_n` enqueues against the quotas of `p_keys` that are set: all of them, or
-- (when one has fewer than `p_n` left in its window) none. Returns NULLs when counted;
-- else the refused quota's key and the milliseconds until its window ends. Quotas are
-- locked in key order, so two producers never wait on each other in turn.
CREATE FUNCTION quota_take(p_keys text[], p_n bigint, OUT refused text, OUT wait_ms bigint)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    q record;
BEGIN
    FOR q IN SELECT * FROM quotas WHERE key = ANY (p_keys) ORDER BY key FOR UPDATE LOOP
        IF q.window_ends IS NOT NULL AND q.window_ends <= clock_timestamp() THEN
            q.used := 0;
            q.window_ends := NULL;
        END IF;
        IF q.used + p_n > q.count THEN
            refused := q.key;
            wait_ms := coalesce(
                ceil(extract(epoch FROM q.window_ends - clock_timestamp()) * 1000)::bigint,
                q.period_ms);
            RETURN;
        END IF;
    END LOOP;
    UPDATE quotas
    SET used = CASE WHEN window_ends IS NULL OR window_ends <= clock_timestamp() THEN p_n
                    ELSE used + p_n END,
        window_ends = CASE WHEN window_ends IS NULL OR window_ends <= clock_timestamp()
                           THEN clock_timestamp() + make_interval(secs => period_ms / 1000.0)
                           ELSE window_ends END
    WHERE key = ANY (p_keys);
END $$;

-- Gives back `p_n` enqueues counted by quota_take whose jobs were then refused, to the
-- quotas of `p_keys` whose window is still open.
CREATE FUNCTION quota_refund(p_keys text[], p_n bigint) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE quotas SET used = greatest(used - p_n, 0)
    WHERE key = ANY (p_keys) AND window_ends > clock_timestamp();
END $$;
