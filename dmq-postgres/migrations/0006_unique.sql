-- Unique jobs: an idempotency key that holds, within its ttl, only while the job it
-- names is in a given state. Run with the schema first on the search_path, as 0001 is.

-- As `enqueue` of 0004, for a job with idempotency key `p_key` that holds as `p_hold`
-- says: 'ttl' (while the key lasts), 'queued' (while the job it names waits: ready or
-- delayed), 'until_done' (while that job is in the table at all) or 'debounce' (while
-- it is delayed: the same job again, by id, replaces its payload, priority and due
-- time). A key that no longer holds passes to this job. Returns NULL when the job was
-- added or replaced; else the id of the job the key names, which is this job's own id
-- when it came to replace a job that has started (nothing changed then).
CREATE FUNCTION enqueue_unique(p_queue text, p_id uuid, p_priority smallint,
                               p_eta timestamptz, p_payload bytea, p_key text,
                               p_key_ttl interval, p_hold text, p_gate text,
                               p_interval_us bigint, p_burst integer, p_concurrency integer)
RETURNS uuid LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    holder uuid;
    holder_state text;
    holds boolean;
BEGIN
    -- Takes the key when it is new or lapsed; else locks its row, so that enqueues
    -- of one key go one at a time.
    INSERT INTO idempotency_keys AS k (queue, key, job, until)
    VALUES (p_queue, p_key, p_id, now() + p_key_ttl)
    ON CONFLICT (queue, key) DO UPDATE SET job = EXCLUDED.job, until = EXCLUDED.until
        WHERE k.until <= now()
    RETURNING NULL::uuid INTO holder;
    IF NOT FOUND THEN
        SELECT job INTO holder FROM idempotency_keys WHERE queue = p_queue AND key = p_key;
        SELECT state INTO holder_state FROM jobs WHERE queue = p_queue AND id = holder;
        holds := CASE p_hold
            WHEN 'queued' THEN coalesce(holder_state IN ('ready', 'delayed'), false)
            WHEN 'until_done' THEN holder_state IS NOT NULL
            WHEN 'debounce' THEN coalesce(holder_state = 'delayed', false)
            ELSE true END;
        IF holds AND p_hold = 'debounce' AND holder = p_id THEN
            UPDATE jobs
            SET payload = p_payload, priority = p_priority, deliveries = 0,
                due_at = greatest(coalesce(p_eta, now()), now())
            WHERE queue = p_queue AND id = p_id AND state = 'delayed';
            IF NOT FOUND THEN
                RETURN holder;
            END IF;
            UPDATE idempotency_keys SET until = now() + p_key_ttl
            WHERE queue = p_queue AND key = p_key;
            -- Idle claimers time their wait by the soonest due job: they look again.
            PERFORM pg_notify(current_schema() || '.jobs', p_queue);
            RETURN NULL;
        END IF;
        IF holds OR holder = p_id THEN
            RETURN holder;
        END IF;
        UPDATE idempotency_keys SET job = p_id, until = now() + p_key_ttl
        WHERE queue = p_queue AND key = p_key;
    END IF;
    RETURN enqueue(p_queue, p_id, p_priority, p_eta, p_payload, NULL, NULL, p_gate,
                   p_interval_us, p_burst, p_concurrency);
END $$;
