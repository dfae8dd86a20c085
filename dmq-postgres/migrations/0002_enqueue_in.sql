-- Enqueue in the caller's transaction (`EnqueueIn` in dmq-postgres), in one statement
-- that writes what this schema's mode says: straight into `jobs` for a PostgresBroker,
-- into `outbox` for the relay that moves jobs to Redis. Run with the schema first on
-- the search_path, as 0001 is; the function pins it.

-- Adds one job in the calling transaction, so that it exists if and only if that
-- transaction commits.
-- Mode 'broker': as `enqueue` (the idempotency key checked, idle claimers notified
-- at commit). Mode 'outbox': the key, when given, is checked and held in
-- `idempotency_keys` as `enqueue` does, then the job waits in `outbox` (the relay is
-- notified at commit). No mode: raises DQ002, naming the schema.
-- Returns NULL when added; the id of the job that holds the key when the key is taken.
-- Raises unique_violation (23505) when the id is already in the queue (mode 'broker').
CREATE FUNCTION enqueue_in(p_queue text, p_id uuid, p_priority smallint, p_eta timestamptz,
                           p_payload bytea, p_key text, p_key_ttl interval)
RETURNS uuid LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    served text;
    holder uuid;
BEGIN
    SELECT value INTO served FROM settings WHERE name = 'mode';
    IF served = 'broker' THEN
        RETURN enqueue(p_queue, p_id, p_priority, p_eta, p_payload, p_key, p_key_ttl);
    ELSIF served = 'outbox' THEN
        IF p_key IS NOT NULL THEN
            INSERT INTO idempotency_keys AS k (queue, key, job, until)
            VALUES (p_queue, p_key, p_id, now() + p_key_ttl)
            ON CONFLICT (queue, key) DO UPDATE SET job = EXCLUDED.job, until = EXCLUDED.until
                WHERE k.until <= now()
            RETURNING NULL::uuid INTO holder;
            IF NOT FOUND THEN
                SELECT job INTO holder FROM idempotency_keys WHERE queue = p_queue AND key = p_key;
                RETURN holder;
            END IF;
        END IF;
        INSERT INTO outbox (queue, id, priority, eta, payload, idempotency_key, idempotency_ttl)
        VALUES (p_queue, p_id, p_priority, p_eta, p_payload, p_key, p_key_ttl);
        RETURN NULL;
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'DQ002',
            MESSAGE = format('schema %I serves neither a broker nor an outbox yet', current_schema());
    END IF;
END $$;
