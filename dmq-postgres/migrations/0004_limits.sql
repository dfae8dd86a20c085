-- Flow limits: a job may pass a gate, named per queue (the task's name, or the task's
-- name and a key), with a rate (a GCRA: one start per interval, up to `burst` at once)
-- and a concurrency (how many of its jobs may run at once). A claim lets a gate's ready
-- jobs start only as far as the gate allows; the others stay ready, and start as soon
-- as it allows. Run with the schema first on the search_path, as 0001 is.

-- The gate a job passes; NULL for none.
ALTER TABLE jobs ADD COLUMN gate text;

-- Every gate of every queue, with the limits its last enqueue gave it.
CREATE TABLE gates (
    queue       text NOT NULL,
    name        text NOT NULL,
    -- Microseconds between two starts at the steady rate; 0 for no rate.
    interval_us bigint NOT NULL DEFAULT 0 CHECK (interval_us >= 0),
    burst       integer NOT NULL DEFAULT 1 CHECK (burst >= 1),
    -- How many of its jobs may run at once; 0 for no limit.
    concurrency integer NOT NULL DEFAULT 0 CHECK (concurrency >= 0),
    -- The GCRA's theoretical arrival time, in Unix microseconds.
    tat_us      bigint NOT NULL DEFAULT 0,
    -- When its rate lets the next job start, as the last claim that looked found it.
    next_open   timestamptz,
    PRIMARY KEY (queue, name)
);

-- The ready index of 0001 without the jobs behind gates, which have one of their own.
DROP INDEX jobs_ready;
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, position)
    WHERE state = 'ready' AND NOT suspect AND gate IS NULL;
CREATE INDEX jobs_gated ON jobs (queue, gate, priority DESC, position)
    WHERE state = 'ready' AND NOT suspect AND gate IS NOT NULL;
CREATE INDEX jobs_gate_running ON jobs (queue, gate) WHERE state = 'running' AND gate IS NOT NULL;

-- A job that leaves a gate's running jobs (settled, retried, released, taken back)
-- frees a slot: the queue's idle claimers are woken to look.
CREATE FUNCTION notify_gate_freed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.jobs', OLD.queue);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_gate_freed AFTER UPDATE OR DELETE ON jobs FOR EACH ROW
    WHEN (OLD.state = 'running' AND OLD.gate IS NOT NULL) EXECUTE FUNCTION notify_gate_freed();

-- Records gate `p_gate` of queue `p_queue` with these limits (the last enqueue's hold);
-- its rate state stays. Writes nothing when the limits are unchanged.
CREATE FUNCTION set_gate(p_queue text, p_gate text, p_interval_us bigint, p_burst integer,
                         p_concurrency integer)
RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM gates g WHERE g.queue = p_queue AND g.name = p_gate
                   AND g.interval_us = p_interval_us AND g.burst = p_burst
                   AND g.concurrency = p_concurrency) THEN
        INSERT INTO gates AS g (queue, name, interval_us, burst, concurrency)
        VALUES (p_queue, p_gate, p_interval_us, greatest(p_burst, 1), p_concurrency)
        ON CONFLICT (queue, name) DO UPDATE
        SET interval_us = EXCLUDED.interval_us, burst = EXCLUDED.burst,
            concurrency = EXCLUDED.concurrency;
    END IF;
END $$;

-- As `enqueue` of 0001, for a job that passes gate `p_gate` (NULL for none) with
-- these limits.
CREATE FUNCTION enqueue(p_queue text, p_id uuid, p_priority smallint, p_eta timestamptz,
                        p_payload bytea, p_key text, p_key_ttl interval, p_gate text,
                        p_interval_us bigint, p_burst integer, p_concurrency integer)
RETURNS uuid LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    holder uuid;
BEGIN
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
    INSERT INTO queues (name) VALUES (p_queue) ON CONFLICT DO NOTHING;
    IF p_gate IS NOT NULL THEN
        PERFORM set_gate(p_queue, p_gate, p_interval_us, p_burst, p_concurrency);
    END IF;
    INSERT INTO jobs (queue, id, state, priority, due_at, payload, gate)
    VALUES (p_queue, p_id, CASE WHEN p_eta > now() THEN 'delayed' ELSE 'ready' END,
            p_priority, greatest(coalesce(p_eta, now()), now()), p_payload, p_gate);
    RETURN NULL;
END $$;

-- As `enqueue_batch` of 0001, each job passing the gate of the same index in `p_gates`
-- (NULL for none), whose limits are in the arrays after it.
CREATE FUNCTION enqueue_batch(p_queues text[], p_ids uuid[], p_priorities smallint[],
                              p_etas timestamptz[], p_payloads bytea[], p_gates text[],
                              p_intervals bigint[], p_bursts integer[], p_concurrencies integer[],
                              OUT dup_queue text, OUT dup_id uuid)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    added bigint;
    r record;
BEGIN
    SELECT b.q, b.i INTO dup_queue, dup_id
    FROM (SELECT u.q, u.i, u.n, row_number() OVER (PARTITION BY u.q, u.i ORDER BY u.n) AS k
          FROM unnest(p_queues, p_ids) WITH ORDINALITY AS u(q, i, n)) b
    WHERE b.k > 1 OR EXISTS (SELECT 1 FROM jobs j WHERE j.queue = b.q AND j.id = b.i)
    ORDER BY b.n LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DQ001', MESSAGE = dup_id::text, DETAIL = dup_queue;
    END IF;
    INSERT INTO queues (name) SELECT DISTINCT u.q FROM unnest(p_queues) AS u(q) ON CONFLICT DO NOTHING;
    -- The last job of each gate gives its limits; gates in name order, so that two
    -- batches never wait on each other's gates in turn.
    FOR r IN
        SELECT DISTINCT ON (u.q, u.g) u.q, u.g, u.i, u.b, u.c
        FROM unnest(p_queues, p_gates, p_intervals, p_bursts, p_concurrencies)
             WITH ORDINALITY AS u(q, g, i, b, c, n)
        WHERE u.g IS NOT NULL
        ORDER BY u.q, u.g, u.n DESC
    LOOP
        PERFORM set_gate(r.q, r.g, r.i, r.b, r.c);
    END LOOP;
    WITH added_rows AS (
        INSERT INTO jobs (queue, id, state, priority, due_at, payload, position, gate)
        SELECT b.q, b.i, CASE WHEN b.e > now() THEN 'delayed' ELSE 'ready' END, b.p,
               greatest(coalesce(b.e, now()), now()), b.pl, nextval('job_order'), b.g
        FROM (SELECT * FROM unnest(p_queues, p_ids, p_priorities, p_etas, p_payloads, p_gates)
              WITH ORDINALITY AS u(q, i, p, e, pl, g, n) ORDER BY u.n) b
        ON CONFLICT (queue, id) DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO added FROM added_rows;
    IF added < cardinality(p_ids) THEN
        -- Another transaction queued one of the ids meanwhile.
        SELECT u.q, u.i INTO dup_queue, dup_id
        FROM unnest(p_queues, p_ids) WITH ORDINALITY AS u(q, i, n)
        WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.queue = u.q AND j.id = u.i
                      AND j.enqueued_at < now())
        ORDER BY u.n LIMIT 1;
        RAISE EXCEPTION USING ERRCODE = 'DQ001', MESSAGE = coalesce(dup_id::text, p_ids[1]::text),
            DETAIL = coalesce(dup_queue, p_queues[1]);
    END IF;
END $$;

-- As `enqueue_in` of 0002, for a job that passes a gate. In outbox mode the gate goes
-- with the envelope, which the relay reads.
CREATE FUNCTION enqueue_in(p_queue text, p_id uuid, p_priority smallint, p_eta timestamptz,
                           p_payload bytea, p_key text, p_key_ttl interval, p_gate text,
                           p_interval_us bigint, p_burst integer, p_concurrency integer)
RETURNS uuid LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    served text;
BEGIN
    SELECT value INTO served FROM settings WHERE name = 'mode';
    IF served = 'broker' THEN
        RETURN enqueue(p_queue, p_id, p_priority, p_eta, p_payload, p_key, p_key_ttl, p_gate,
                       p_interval_us, p_burst, p_concurrency);
    END IF;
    RETURN enqueue_in(p_queue, p_id, p_priority, p_eta, p_payload, p_key, p_key_ttl);
END $$;

-- How many more of gate `g`'s jobs may start now (`p_now_us`, Unix µs), up to `p_want`:
-- its free slots and what its rate allows.
CREATE FUNCTION gate_room(g gates, p_now_us bigint, p_want integer)
RETURNS integer LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    room integer := p_want;
    running integer;
    tat bigint := g.tat_us;
    n integer := 0;
BEGIN
    IF g.concurrency > 0 THEN
        SELECT count(*) INTO running FROM jobs r
        WHERE r.queue = g.queue AND r.gate = g.name AND r.state = 'running';
        room := least(room, g.concurrency - running);
    END IF;
    IF g.interval_us > 0 THEN
        WHILE n < room AND greatest(tat, p_now_us) - p_now_us <= g.interval_us * (g.burst - 1) LOOP
            tat := greatest(tat, p_now_us) + g.interval_us;
            n := n + 1;
        END LOOP;
        room := n;
    END IF;
    RETURN greatest(room, 0);
END $$;

-- Counts `p_took` starts against gate `g`'s rate at `p_now_us`, and records when its
-- rate lets the next one start.
CREATE FUNCTION gate_took(g gates, p_now_us bigint, p_took integer)
RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    tat bigint := g.tat_us;
BEGIN
    IF g.interval_us = 0 THEN
        RETURN;
    END IF;
    FOR i IN 1 .. p_took LOOP
        tat := greatest(tat, p_now_us) + g.interval_us;
    END LOOP;
    UPDATE gates SET tat_us = tat,
        next_open = to_timestamp((tat - g.interval_us * (g.burst - 1)) / 1e6)
    WHERE queue = g.queue AND name = g.name;
END $$;

-- The claim of 0001 (as `claim_open`, which `claim` of 0003 calls), with gates: a
-- suspect job behind a closed gate waits (the queue's other jobs go meanwhile); then
-- the ready jobs of each gate that lets some through, as many as it lets, oldest and
-- highest priority first; then the jobs without a gate. A gate another claim is
-- looking at (its row locked) is passed by. When nothing is claimed, next_change is
-- also when a gate's rate lets its next waiting job start.
CREATE OR REPLACE FUNCTION claim_open(p_worker text, p_queues text[], p_max integer,
                                      p_lease interval, p_max_deliveries integer,
                                      p_cap integer)
RETURNS TABLE (queue text, id uuid, payload bytea, deliveries integer, token text,
               fence bigint, isolated boolean, next_change timestamptz)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    q text;
    left_to_take integer := p_max;
    took integer;
    until timestamptz := now() + p_lease;
    now_us bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    s record;
    g gates;
    room integer;
BEGIN
    UPDATE jobs j SET state = 'ready', position = nextval('job_order')
    FROM (SELECT d.queue, d.id FROM jobs d
          WHERE d.state = 'delayed' AND d.queue = ANY (p_queues) AND d.due_at <= now()
          ORDER BY d.due_at LIMIT 1000 FOR UPDATE SKIP LOCKED) due
    WHERE j.queue = due.queue AND j.id = due.id;
    IF EXISTS (SELECT 1 FROM jobs r WHERE r.state = 'running' AND r.queue = ANY (p_queues)
               AND r.lease_until <= now()) THEN
        PERFORM take_back(p_queues, false, p_max_deliveries, p_cap);
    END IF;
    FOREACH q IN ARRAY p_queues LOOP
        EXIT WHEN left_to_take <= 0;
        -- The oldest suspect job, alone, when its gate (if any) lets it.
        SELECT sj.id, sj.gate INTO s FROM jobs sj
        WHERE sj.queue = q AND sj.state = 'ready' AND sj.suspect
        ORDER BY sj.position LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            room := 1;
            IF s.gate IS NOT NULL THEN
                SELECT * INTO g FROM gates gt WHERE gt.queue = q AND gt.name = s.gate
                FOR UPDATE SKIP LOCKED;
                IF FOUND THEN
                    room := gate_room(g, now_us, 1);
                    IF room > 0 THEN
                        PERFORM gate_took(g, now_us, 1);
                    END IF;
                ELSIF EXISTS (SELECT 1 FROM gates gt WHERE gt.queue = q AND gt.name = s.gate) THEN
                    room := 0;
                END IF;
            END IF;
            IF room > 0 THEN
                RETURN QUERY
                WITH leased AS (
                    UPDATE jobs j
                    SET state = 'running', token = gen_random_uuid()::text,
                        fence = nextval('lease_fence'), worker = p_worker, lease_until = until,
                        claimed_at = now(), deliveries = j.deliveries + 1, isolated = true
                    WHERE j.queue = q AND j.id = s.id
                    RETURNING j.queue, j.id, j.payload, j.deliveries, j.token, j.fence)
                SELECT l.queue, l.id, l.payload, l.deliveries, l.token, l.fence, true,
                       NULL::timestamptz
                FROM leased l;
                RETURN;
            END IF;
        END IF;
        -- The jobs behind gates that let some through.
        FOR g IN
            SELECT gt.* FROM gates gt
            WHERE gt.queue = q AND (gt.next_open IS NULL OR gt.next_open <= now())
              AND EXISTS (SELECT 1 FROM jobs w WHERE w.queue = q AND w.gate = gt.name
                          AND w.state = 'ready' AND NOT w.suspect)
            ORDER BY gt.next_open NULLS FIRST, gt.name
            FOR UPDATE OF gt SKIP LOCKED
        LOOP
            EXIT WHEN left_to_take <= 0;
            room := gate_room(g, now_us, left_to_take);
            CONTINUE WHEN room <= 0;
            RETURN QUERY
            WITH picked AS (
                SELECT r.id FROM jobs r
                WHERE r.queue = q AND r.gate = g.name AND r.state = 'ready' AND NOT r.suspect
                ORDER BY r.priority DESC, r.position
                LIMIT room FOR UPDATE SKIP LOCKED),
            leased AS (
                UPDATE jobs j
                SET state = 'running', token = gen_random_uuid()::text,
                    fence = nextval('lease_fence'), worker = p_worker, lease_until = until,
                    claimed_at = now(), deliveries = j.deliveries + 1, isolated = false
                FROM picked
                WHERE j.queue = q AND j.id = picked.id
                RETURNING j.queue, j.id, j.payload, j.deliveries, j.token, j.fence, j.priority,
                          j.position)
            SELECT l.queue, l.id, l.payload, l.deliveries, l.token, l.fence, false,
                   NULL::timestamptz
            FROM leased l ORDER BY l.priority DESC, l.position;
            GET DIAGNOSTICS took = ROW_COUNT;
            PERFORM gate_took(g, now_us, took);
            left_to_take := left_to_take - took;
        END LOOP;
        EXIT WHEN left_to_take <= 0;
        RETURN QUERY
        WITH picked AS (
            SELECT r.id FROM jobs r
            WHERE r.queue = q AND r.state = 'ready' AND NOT r.suspect AND r.gate IS NULL
            ORDER BY r.priority DESC, r.position
            LIMIT left_to_take FOR UPDATE SKIP LOCKED),
        leased AS (
            UPDATE jobs j
            SET state = 'running', token = gen_random_uuid()::text,
                fence = nextval('lease_fence'), worker = p_worker, lease_until = until,
                claimed_at = now(), deliveries = j.deliveries + 1, isolated = false
            FROM picked
            WHERE j.queue = q AND j.id = picked.id
            RETURNING j.queue, j.id, j.payload, j.deliveries, j.token, j.fence, j.priority,
                      j.position)
        SELECT l.queue, l.id, l.payload, l.deliveries, l.token, l.fence, false,
               NULL::timestamptz
        FROM leased l ORDER BY l.priority DESC, l.position;
        GET DIAGNOSTICS took = ROW_COUNT;
        left_to_take := left_to_take - took;
    END LOOP;
    IF left_to_take = p_max THEN
        RETURN QUERY
        SELECT NULL::text, NULL::uuid, NULL::bytea, NULL::integer, NULL::text, NULL::bigint,
               NULL::boolean,
               least((SELECT min(d.due_at) FROM jobs d
                      WHERE d.state = 'delayed' AND d.queue = ANY (p_queues)),
                     (SELECT min(r.lease_until) FROM jobs r
                      WHERE r.state = 'running' AND r.queue = ANY (p_queues)),
                     (SELECT min(gt.next_open) FROM gates gt
                      WHERE gt.queue = ANY (p_queues) AND gt.next_open > now()
                        AND EXISTS (SELECT 1 FROM jobs w WHERE w.queue = gt.queue
                                    AND w.gate = gt.name AND w.state = 'ready')));
    END IF;
END $$;

-- The view of 0003, with how many ready jobs wait behind gates.
CREATE OR REPLACE VIEW queue_depths AS
SELECT q.name AS queue,
       count(j.id) FILTER (WHERE j.state = 'ready') AS ready,
       count(j.id) FILTER (WHERE j.state = 'ready' AND j.suspect) AS suspect,
       count(j.id) FILTER (WHERE j.state = 'delayed') AS delayed,
       count(j.id) FILTER (WHERE j.state = 'running') AS running,
       (SELECT count(*) FROM dead_letters d WHERE d.queue = q.name) AS dead,
       q.dead_dropped,
       min(j.enqueued_at) FILTER (WHERE j.state = 'ready') AS oldest_ready_since,
       q.paused_at,
       count(j.id) FILTER (WHERE j.state = 'ready' AND NOT j.suspect AND j.gate IS NOT NULL)
           AS gated
FROM queues q
LEFT JOIN jobs j ON j.queue = q.name
GROUP BY q.name, q.dead_dropped, q.paused_at;
