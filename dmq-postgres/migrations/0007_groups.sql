-- Fair claiming: jobs with a group (a tenant) are claimed round robin across groups,
-- one job of each group in turn; and claims report the jobs they hold back at their
-- gates. Run with the schema first on the search_path, as 0001 is.

-- The group a job is claimed fairly in (NULL for none), compared byte by byte.
ALTER TABLE jobs ADD COLUMN grp text COLLATE "C";
-- The group a claim of the queue last took a job from: the next starts after it.
ALTER TABLE queues ADD COLUMN last_group text COLLATE "C";
-- Whether a claim reported the job held back at its gate (reported once per hold:
-- cleared when its gate lets it through).
ALTER TABLE jobs ADD COLUMN held boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_unreported ON jobs (queue, gate)
    WHERE state = 'ready' AND gate IS NOT NULL AND NOT held AND NOT suspect;
-- The ready index of 0004 without the grouped jobs, which have one of their own: the
-- ungrouped pick reads no grouped row.
DROP INDEX jobs_ready;
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, position)
    WHERE state = 'ready' AND NOT suspect AND gate IS NULL AND grp IS NULL;
CREATE INDEX jobs_grouped ON jobs (queue, grp, priority DESC, position)
    WHERE state = 'ready' AND grp IS NOT NULL AND gate IS NULL AND NOT suspect;

-- Leases up to `p_n` of queue `p_queue`'s ready grouped jobs (without a gate, not
-- suspect) to `p_worker` until `p_until`, one of each group in turn: the first
-- (highest priority, then oldest) of the group after the one the queue's last claim
-- took from, round robin over the groups in the order of their names. A job another
-- claim holds locked is passed by (that claim may take from the same group). The
-- queue's `last_group` is written only by a claim that can lock its row at once, so
-- claims never wait on each other for it.
CREATE FUNCTION claim_grouped(p_queue text, p_worker text, p_until timestamptz, p_n integer)
RETURNS TABLE (queue text, id uuid, payload bytea, deliveries integer, token text,
               fence bigint, isolated boolean, next_change timestamptz)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    last text COLLATE "C";
    g text COLLATE "C";
    pick uuid;
    took integer := 0;
    tries integer := 0;
BEGIN
    SELECT qu.last_group INTO last FROM queues qu WHERE qu.name = p_queue;
    WHILE took < p_n AND tries < 4 * p_n + 16 LOOP
        tries := tries + 1;
        g := NULL;
        IF last IS NOT NULL THEN
            SELECT j.grp INTO g FROM jobs j
            WHERE j.queue = p_queue AND j.state = 'ready' AND j.grp IS NOT NULL
              AND j.gate IS NULL AND NOT j.suspect AND j.grp > last
            ORDER BY j.grp LIMIT 1;
        END IF;
        IF g IS NULL THEN
            SELECT j.grp INTO g FROM jobs j
            WHERE j.queue = p_queue AND j.state = 'ready' AND j.grp IS NOT NULL
              AND j.gate IS NULL AND NOT j.suspect
            ORDER BY j.grp LIMIT 1;
        END IF;
        EXIT WHEN g IS NULL;
        last := g;
        SELECT j.id INTO pick FROM jobs j
        WHERE j.queue = p_queue AND j.grp = g AND j.state = 'ready' AND j.gate IS NULL
          AND NOT j.suspect
        ORDER BY j.priority DESC, j.position LIMIT 1 FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        RETURN QUERY
        UPDATE jobs j
        SET state = 'running', token = gen_random_uuid()::text,
            fence = nextval('lease_fence'), worker = p_worker, lease_until = p_until,
            claimed_at = now(), deliveries = j.deliveries + 1, isolated = false
        WHERE j.queue = p_queue AND j.id = pick
        RETURNING j.queue, j.id, j.payload, j.deliveries, j.token, j.fence, false,
                  NULL::timestamptz;
        took := took + 1;
    END LOOP;
    IF took > 0 THEN
        PERFORM 1 FROM queues qu WHERE qu.name = p_queue FOR NO KEY UPDATE SKIP LOCKED;
        IF FOUND THEN
            UPDATE queues SET last_group = last WHERE name = p_queue;
        END IF;
    END IF;
END $$;

-- Marks up to 1,000 ready jobs of gate `p_gate` of queue `p_queue` that no claim
-- reported yet as held back by limit `p_why` (passing by those another claim holds
-- locked), and returns them as report rows of `claim_open`; the next claim reports
-- more.
CREATE FUNCTION report_held(p_queue text, p_gate text, p_why text)
RETURNS TABLE (queue text, id uuid, payload bytea, deliveries integer, token text,
               fence bigint, isolated boolean, next_change timestamptz)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    UPDATE jobs h SET held = true
    FROM (SELECT u.id FROM jobs u
          WHERE u.queue = p_queue AND u.gate = p_gate AND u.state = 'ready'
            AND NOT u.suspect AND NOT u.held
          LIMIT 1000 FOR UPDATE SKIP LOCKED) pick
    WHERE h.queue = p_queue AND h.id = pick.id
    RETURNING h.queue, h.id, h.payload, NULL::integer, 'held:' || p_why || ':' || p_gate,
              NULL::bigint, NULL::boolean, NULL::timestamptz
$$;

-- The claim of 0004, with grouped jobs: those without a gate are claimed by
-- `claim_grouped`, sharing each claim with the ungrouped jobs. It also returns a row
-- for each job it holds back at its gate, once per hold: a row with no fence, whose
-- token is `held:<limit>:<gate>` (limit `rate` or `concurrency`).
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
    grouped boolean;
    why text;
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
            -- The gate's limit holds back the jobs this claim leaves behind.
            IF room < left_to_take THEN
                why := CASE WHEN g.concurrency > 0
                                 AND room + (SELECT count(*) FROM jobs r WHERE r.queue = q
                                             AND r.gate = g.name AND r.state = 'running')
                                     >= g.concurrency
                            THEN 'concurrency' ELSE 'rate' END;
            ELSE
                why := NULL;
            END IF;
            IF room <= 0 THEN
                RETURN QUERY SELECT * FROM report_held(q, g.name, why);
                CONTINUE;
            END IF;
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
                    claimed_at = now(), deliveries = j.deliveries + 1, isolated = false,
                    held = false
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
            IF why IS NOT NULL THEN
                RETURN QUERY SELECT * FROM report_held(q, g.name, why);
            END IF;
        END LOOP;
        -- Jobs of the gates whose rate holds them until later, not looked at above.
        RETURN QUERY
        SELECT r.* FROM gates gt, LATERAL report_held(q, gt.name, 'rate') r
        WHERE gt.queue = q AND gt.next_open > now()
          AND EXISTS (SELECT 1 FROM jobs w WHERE w.queue = q AND w.gate = gt.name
                      AND w.state = 'ready' AND NOT w.suspect AND NOT w.held);
        EXIT WHEN left_to_take <= 0;
        -- Grouped jobs take half the claim while ungrouped ones wait, and the rest of
        -- it when those run out.
        grouped := EXISTS (SELECT 1 FROM jobs r WHERE r.queue = q AND r.state = 'ready'
                           AND r.grp IS NOT NULL AND r.gate IS NULL AND NOT r.suspect);
        IF grouped THEN
            -- An odd slot (a claim of one job, say) goes to either side by the parity
            -- of the claim's transaction id, so that neither starves the other.
            RETURN QUERY SELECT * FROM claim_grouped(q, p_worker, until,
                left_to_take / 2 + (left_to_take % 2) * (txid_current() % 2)::integer);
            GET DIAGNOSTICS took = ROW_COUNT;
            left_to_take := left_to_take - took;
        END IF;
        RETURN QUERY
        WITH picked AS (
            SELECT r.id FROM jobs r
            WHERE r.queue = q AND r.state = 'ready' AND NOT r.suspect AND r.gate IS NULL
              AND r.grp IS NULL
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
        IF grouped AND left_to_take > 0 THEN
            RETURN QUERY SELECT * FROM claim_grouped(q, p_worker, until, left_to_take);
            GET DIAGNOSTICS took = ROW_COUNT;
            left_to_take := left_to_take - took;
        END IF;
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
