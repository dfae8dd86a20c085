-- dmq's tables, views and functions, in the schema of one namespace (`dmq` by default).
-- Run with that schema first on the search_path; every function pins it
-- (`SET search_path FROM CURRENT`), so callers on any search_path reach these tables.
-- The tables are documented in README.md ("PostgreSQL"): an operator may read them
-- with SQL, and should change them only through dmq.

-- What this schema serves: `mode` is 'broker' (a PostgresBroker keeps its jobs here)
-- or 'outbox' (jobs enqueued in a transaction wait in `outbox` for the relay that
-- moves them to Redis). Set by the first broker or relay that connects.
CREATE TABLE settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- The queue registry: every queue a job was enqueued to or a worker takes jobs from.
CREATE TABLE queues (
    name         text PRIMARY KEY,
    -- Dead letters dropped because the dead-letter queue was full.
    dead_dropped bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- First in, first out within a priority: the order jobs became ready in.
CREATE SEQUENCE job_order;
-- Lease fences: every claim of any job takes the next one (below 2^53).
CREATE SEQUENCE lease_fence;

-- Every job that waits or runs. A settled job's row is deleted.
CREATE TABLE jobs (
    queue       text NOT NULL,
    id          uuid NOT NULL,
    -- 'ready' (due, waiting to be claimed), 'delayed' (waiting for due_at) or
    -- 'running' (claimed, under a lease until lease_until).
    state       text NOT NULL CHECK (state IN ('ready', 'delayed', 'running')),
    priority    smallint NOT NULL CHECK (priority BETWEEN 0 AND 9),
    -- Taken back after its worker was lost while running it: claimed alone.
    suspect     boolean NOT NULL DEFAULT false,
    due_at      timestamptz NOT NULL DEFAULT now(),
    position    bigint NOT NULL DEFAULT nextval('job_order'),
    -- The MessagePack envelope.
    payload     bytea NOT NULL,
    -- Claims since it was last enqueued or retried.
    deliveries  integer NOT NULL DEFAULT 0,
    -- How many times its worker was lost while it ran alone.
    strikes     integer NOT NULL DEFAULT 0,
    -- The lease, while running.
    token       text,
    fence       bigint,
    worker      text,
    lease_until timestamptz,
    claimed_at  timestamptz,
    isolated    boolean NOT NULL DEFAULT false,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, id),
    -- A running job has a whole lease (so that it expires, and is taken back); a
    -- waiting one has none (so that no stale token can settle it).
    CHECK (CASE WHEN state = 'running'
                THEN token IS NOT NULL AND fence IS NOT NULL AND worker IS NOT NULL
                     AND lease_until IS NOT NULL AND claimed_at IS NOT NULL
                ELSE token IS NULL AND lease_until IS NULL END)
);
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, position) WHERE state = 'ready' AND NOT suspect;
CREATE INDEX jobs_suspect ON jobs (queue, position) WHERE state = 'ready' AND suspect;
CREATE INDEX jobs_delayed ON jobs (queue, due_at) WHERE state = 'delayed';
CREATE INDEX jobs_running ON jobs (queue, lease_until) WHERE state = 'running';
CREATE INDEX jobs_worker ON jobs (worker) WHERE state = 'running';

-- Dead letters, newest last; each queue keeps at most the broker's cap.
CREATE TABLE dead_letters (
    position bigserial PRIMARY KEY,
    queue    text NOT NULL,
    id       uuid NOT NULL,
    payload  bytea NOT NULL,
    reason   text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_queue ON dead_letters (queue, position DESC);
CREATE INDEX dead_letters_id ON dead_letters (id);

-- Idempotency keys per queue, until they lapse.
CREATE TABLE idempotency_keys (
    queue text NOT NULL,
    key   text NOT NULL,
    job   uuid NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);

-- Completions recorded for the exactly-once guarantee, until they are forgotten.
CREATE TABLE completions (
    queue text NOT NULL,
    id    uuid NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (queue, id)
);
CREATE INDEX completions_until ON completions (until);

-- Registered workers; a worker whose alive_until passed counts as dead.
CREATE TABLE workers (
    id          text PRIMARY KEY,
    hostname    text NOT NULL,
    pid         bigint NOT NULL,
    queues      text[] NOT NULL,
    concurrency bigint NOT NULL,
    started_at  timestamptz NOT NULL,
    running     bigint NOT NULL,
    ttl         interval NOT NULL,
    alive_until timestamptz NOT NULL
);

-- Periodic schedules, shared by every scheduler.
CREATE TABLE schedules (
    name      text PRIMARY KEY,
    since     timestamptz NOT NULL DEFAULT now(),
    last_fire timestamptz,
    next_fire timestamptz
);

-- The event stream: one row per published batch (MessagePack, as on Redis).
CREATE TABLE events (
    position bigserial PRIMARY KEY,
    count    integer NOT NULL,
    batch    bytea NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);

-- Jobs enqueued in a caller's transaction for a Redis broker, waiting for the relay.
CREATE TABLE outbox (
    position        bigserial PRIMARY KEY,
    queue           text NOT NULL,
    id              uuid NOT NULL,
    priority        smallint NOT NULL,
    eta             timestamptz,
    payload         bytea NOT NULL,
    idempotency_key text,
    idempotency_ttl interval,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Task results (PostgresBackend), until expires_at.
CREATE TABLE results (
    id         uuid PRIMARY KEY,
    state      text NOT NULL,
    -- The fence of the run that stored it; 0 for a plain store.
    fence      bigint NOT NULL,
    -- The MessagePack outcome, as on Redis.
    outcome    bytea NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX results_expires_at ON results (expires_at);

-- Queue depths, for operators.
CREATE VIEW queue_depths AS
SELECT q.name AS queue,
       count(j.id) FILTER (WHERE j.state = 'ready') AS ready,
       count(j.id) FILTER (WHERE j.state = 'ready' AND j.suspect) AS suspect,
       count(j.id) FILTER (WHERE j.state = 'delayed') AS delayed,
       count(j.id) FILTER (WHERE j.state = 'running') AS running,
       (SELECT count(*) FROM dead_letters d WHERE d.queue = q.name) AS dead,
       q.dead_dropped,
       min(j.enqueued_at) FILTER (WHERE j.state = 'ready') AS oldest_ready_since
FROM queues q
LEFT JOIN jobs j ON j.queue = q.name
GROUP BY q.name, q.dead_dropped;

-- Wakes idle claimers: every insert names its queues on the channel '<schema>.jobs'
-- (delivered when the inserting transaction commits, so a rolled-back enqueue wakes
-- nobody), and so does every update that makes a job ready.
CREATE FUNCTION notify_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.jobs', q) FROM (SELECT DISTINCT queue AS q FROM inserted) s;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION notify_inserted();

CREATE FUNCTION notify_ready() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.jobs', NEW.queue);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_ready_again AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.state = 'ready' AND OLD.state <> 'ready') EXECUTE FUNCTION notify_ready();

CREATE FUNCTION notify_outbox() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_inserted AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();

CREATE FUNCTION notify_result() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.results', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER results_stored AFTER INSERT OR UPDATE ON results FOR EACH ROW
    EXECUTE FUNCTION notify_result();

CREATE FUNCTION notify_events() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_published AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events();

-- Adds a dead letter to `p_queue`'s dead-letter queue, dropping (and counting) the
-- oldest beyond `p_cap`.
CREATE FUNCTION bury(p_queue text, p_id uuid, p_payload bytea, p_reason text, p_cap integer)
RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    dropped bigint;
BEGIN
    INSERT INTO dead_letters (queue, id, payload, reason) VALUES (p_queue, p_id, p_payload, p_reason);
    WITH gone AS (
        DELETE FROM dead_letters
        WHERE queue = p_queue
          AND position <= (SELECT position FROM dead_letters WHERE queue = p_queue
                           ORDER BY position DESC OFFSET greatest(p_cap, 0) LIMIT 1)
        RETURNING 1)
    SELECT count(*) INTO dropped FROM gone;
    IF dropped > 0 THEN
        INSERT INTO queues (name, dead_dropped) VALUES (p_queue, dropped)
        ON CONFLICT (name) DO UPDATE SET dead_dropped = queues.dead_dropped + dropped;
    END IF;
END $$;

-- Adds one job, checking its idempotency key first.
-- Returns NULL when added; the id of the job that holds the key when the key is taken.
-- Raises unique_violation (23505) when the id is already in the queue.
CREATE FUNCTION enqueue(p_queue text, p_id uuid, p_priority smallint, p_eta timestamptz,
                        p_payload bytea, p_key text, p_key_ttl interval)
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
    INSERT INTO jobs (queue, id, state, priority, due_at, payload)
    VALUES (p_queue, p_id, CASE WHEN p_eta > now() THEN 'delayed' ELSE 'ready' END,
            p_priority, greatest(coalesce(p_eta, now()), now()), p_payload);
    RETURN NULL;
END $$;

-- Adds many jobs, all or none. Returns NULL when added; when an id is already in
-- its queue, or repeated in the batch, adds nothing and returns the first such job
-- as 'queue' and 'id' of a record.
CREATE FUNCTION enqueue_batch(p_queues text[], p_ids uuid[], p_priorities smallint[],
                              p_etas timestamptz[], p_payloads bytea[],
                              OUT dup_queue text, OUT dup_id uuid)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    added bigint;
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
    WITH added_rows AS (
        INSERT INTO jobs (queue, id, state, priority, due_at, payload, position)
        SELECT b.q, b.i, CASE WHEN b.e > now() THEN 'delayed' ELSE 'ready' END, b.p,
               greatest(coalesce(b.e, now()), now()), b.pl, nextval('job_order')
        FROM (SELECT * FROM unnest(p_queues, p_ids, p_priorities, p_etas, p_payloads)
              WITH ORDINALITY AS u(q, i, p, e, pl, n) ORDER BY u.n) b
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

-- Takes back the jobs of `p_queues` whose lease expired, and with `p_workers` also the
-- jobs that workers whose heartbeat lapsed claimed at least a heartbeat's ttl ago (in
-- any queue). Each becomes suspect, to be claimed alone; one lost while running alone
-- gets a strike, and with `p_max` strikes (0 for no limit) it is dead-lettered as a
-- poison pill instead. Returns how many jobs it moved.
CREATE FUNCTION take_back(p_queues text[], p_workers boolean, p_max integer, p_cap integer)
RETURNS bigint LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    r record;
    moved bigint := 0;
BEGIN
    FOR r IN
        SELECT j.queue, j.id, j.isolated, j.strikes, j.deliveries, j.payload,
               CASE WHEN j.lease_until <= now() THEN 'lease expired'
                    ELSE 'its worker stopped heartbeating' END AS why
        FROM jobs j
        WHERE j.state = 'running'
          AND ((j.queue = ANY (p_queues) AND j.lease_until <= now())
            OR (p_workers AND EXISTS (
                  SELECT 1 FROM workers w
                  WHERE w.id = j.worker AND w.alive_until <= now()
                    AND j.claimed_at + w.ttl <= now())))
        ORDER BY j.lease_until
        FOR UPDATE OF j SKIP LOCKED
    LOOP
        moved := moved + 1;
        IF r.isolated AND p_max > 0 AND r.strikes + 1 >= p_max THEN
            DELETE FROM jobs WHERE queue = r.queue AND id = r.id;
            PERFORM bury(r.queue, r.id, r.payload,
                format('poison: its worker was lost %s times while it ran alone (%s; %s deliveries); it may crash or hang its worker',
                       r.strikes + 1, r.why, r.deliveries),
                p_cap);
        ELSE
            UPDATE jobs
            SET state = 'ready', suspect = true, position = nextval('job_order'),
                strikes = strikes + CASE WHEN r.isolated THEN 1 ELSE 0 END,
                token = NULL, worker = NULL, lease_until = NULL, claimed_at = NULL,
                isolated = false
            WHERE queue = r.queue AND id = r.id;
        END IF;
    END LOOP;
    RETURN moved;
END $$;

-- Claims up to `p_max` due jobs of `p_queues`, in their order, each under a lease of
-- `p_lease` with a fresh token and fence, held by `p_worker`. First makes due delayed
-- jobs ready and takes back expired leases (see take_back). A queue with a suspect
-- job hands out that job alone, flagged isolated, and the claim ends there (after
-- what earlier queues gave). Returns the claimed jobs; when none, one row whose id is
-- NULL and whose next_change is when a delayed job falls due or a lease expires
-- (NULL for never).
CREATE FUNCTION claim(p_worker text, p_queues text[], p_max integer, p_lease interval,
                      p_max_deliveries integer, p_cap integer)
RETURNS TABLE (queue text, id uuid, payload bytea, deliveries integer, token text,
               fence bigint, isolated boolean, next_change timestamptz)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    q text;
    left_to_take integer := p_max;
    took integer;
    until timestamptz := now() + p_lease;
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
        RETURN QUERY
        WITH leased AS (
            UPDATE jobs j
            SET state = 'running', token = gen_random_uuid()::text,
                fence = nextval('lease_fence'), worker = p_worker, lease_until = until,
                claimed_at = now(), deliveries = j.deliveries + 1, isolated = true
            FROM (SELECT s.id FROM jobs s
                  WHERE s.queue = q AND s.state = 'ready' AND s.suspect
                  ORDER BY s.position LIMIT 1 FOR UPDATE SKIP LOCKED) picked
            WHERE j.queue = q AND j.id = picked.id
            RETURNING j.queue, j.id, j.payload, j.deliveries, j.token, j.fence)
        SELECT l.queue, l.id, l.payload, l.deliveries, l.token, l.fence, true,
               NULL::timestamptz
        FROM leased l;
        IF FOUND THEN
            RETURN;
        END IF;
        RETURN QUERY
        WITH picked AS (
            SELECT r.id FROM jobs r
            WHERE r.queue = q AND r.state = 'ready' AND NOT r.suspect
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
                      WHERE r.state = 'running' AND r.queue = ANY (p_queues)));
    END IF;
END $$;

-- Deletes up to `p_limit` lapsed rows of each table that keeps rows for a while
-- (results, completions, idempotency keys); returns how many it deleted in all.
-- Readers ignore lapsed rows, so a sweep that runs late changes no answer.
CREATE FUNCTION sweep(p_limit integer) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    DELETE FROM results WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM results WHERE expires_at <= now() LIMIT p_limit FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM completions WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM completions WHERE until <= now() LIMIT p_limit FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM idempotency_keys WHERE until <= now() LIMIT p_limit FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END $$;

-- Appends one batch of `p_count` events to the event stream, then drops the oldest
-- batches while the newer ones hold at least `p_cap` events. Publishers take turns
-- (a transaction lock), so positions become visible in their order and a reader that
-- reads on from a position misses nothing published before it.
CREATE FUNCTION publish_events(p_count integer, p_batch bytea, p_cap bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    pos bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.events'));
    INSERT INTO events (count, batch) VALUES (p_count, p_batch) RETURNING position INTO pos;
    DELETE FROM events
    WHERE position < (SELECT k.position
                      FROM (SELECT e.position, sum(e.count) OVER (ORDER BY e.position DESC) AS kept
                            FROM events e) k
                      WHERE k.kept >= p_cap
                      ORDER BY k.position DESC LIMIT 1);
    RETURN pos;
END $$;
