-- Pausing a queue (`dmq pause`): workers claim nothing from a paused queue, while its
-- enqueues still land. Run with the schema first on the search_path, as 0001 is.

-- Since when the queue is paused; NULL while it runs.
ALTER TABLE queues ADD COLUMN paused_at timestamptz;

-- The claim of 0001, kept under another name: `claim` below hands it the queues that
-- are not paused, in their order.
ALTER FUNCTION claim(text, text[], integer, interval, integer, integer) RENAME TO claim_open;

-- As claim_open, over those of `p_queues` that are not paused. A paused queue's upkeep
-- (due delayed jobs, expired leases) waits for its resume, whose notification wakes
-- its idle claimers.
CREATE FUNCTION claim(p_worker text, p_queues text[], p_max integer, p_lease interval,
                      p_max_deliveries integer, p_cap integer)
RETURNS TABLE (queue text, id uuid, payload bytea, deliveries integer, token text,
               fence bigint, isolated boolean, next_change timestamptz)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    RETURN QUERY SELECT * FROM claim_open(p_worker, ARRAY(
        SELECT w.q FROM unnest(p_queues) WITH ORDINALITY AS w(q, n)
        WHERE NOT EXISTS (SELECT 1 FROM queues p WHERE p.name = w.q AND p.paused_at IS NOT NULL)
        ORDER BY w.n), p_max, p_lease, p_max_deliveries, p_cap);
END $$;

-- An enqueue into a paused queue wakes nobody: its resume does.
CREATE OR REPLACE FUNCTION notify_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.jobs', s.q)
    FROM (SELECT DISTINCT queue AS q FROM inserted) s
    WHERE NOT EXISTS (SELECT 1 FROM queues p WHERE p.name = s.q AND p.paused_at IS NOT NULL);
    RETURN NULL;
END $$;

-- The view of 0001, with since when each queue is paused.
CREATE OR REPLACE VIEW queue_depths AS
SELECT q.name AS queue,
       count(j.id) FILTER (WHERE j.state = 'ready') AS ready,
       count(j.id) FILTER (WHERE j.state = 'ready' AND j.suspect) AS suspect,
       count(j.id) FILTER (WHERE j.state = 'delayed') AS delayed,
       count(j.id) FILTER (WHERE j.state = 'running') AS running,
       (SELECT count(*) FROM dead_letters d WHERE d.queue = q.name) AS dead,
       q.dead_dropped,
       min(j.enqueued_at) FILTER (WHERE j.state = 'ready') AS oldest_ready_since,
       q.paused_at
FROM queues q
LEFT JOIN jobs j ON j.queue = q.name
GROUP BY q.name, q.dead_dropped, q.paused_at;
