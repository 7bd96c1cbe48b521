-- Fencing of partition writes (connectors/leases.py, daemon/cluster.py).
--
-- * incarnation: a token made by each process at start. A lease belongs to the running intake of
--   one process, not to an instance id: a process restarted with the same instance_id has a new
--   incarnation and never renews its predecessor's leases (it takes them over, bumping the epoch).
-- * partition_fences: the current epoch of each partition, kept by a trigger in the same
--   transaction that changes a lease's epoch. Every write transaction of a partition locks its
--   row FOR SHARE and compares the epoch it holds: a takeover (which updates the row) waits for
--   writes already holding it and, once committed, makes every later write of an older epoch
--   fail in its own transaction. Renewals update partition_leases only, so they never wait for
--   writes nor writes for them.
ALTER TABLE partition_leases ADD COLUMN incarnation text NOT NULL DEFAULT '';
ALTER TABLE cluster_members ADD COLUMN incarnation text NOT NULL DEFAULT '';

CREATE TABLE partition_fences (
    site_id   text NOT NULL,
    partition integer NOT NULL,
    epoch     bigint NOT NULL,
    PRIMARY KEY (site_id, partition)
);

INSERT INTO partition_fences (site_id, partition, epoch) SELECT site_id, partition, epoch FROM partition_leases;

CREATE FUNCTION partition_fence_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO partition_fences (site_id, partition, epoch) VALUES (NEW.site_id, NEW.partition, NEW.epoch)
    ON CONFLICT (site_id, partition) DO UPDATE SET epoch = EXCLUDED.epoch;
    RETURN NEW;
END $$;

CREATE TRIGGER partition_fence_follow AFTER INSERT OR UPDATE OF epoch ON partition_leases
    FOR EACH ROW EXECUTE FUNCTION partition_fence_follow();

-- Called by Store.write as the last statement of a fenced write transaction: locks the fences of
-- the partitions the transaction writes for (FOR SHARE, in partition order) and refuses the whole
-- transaction (SQLSTATE PWF01, the stale partitions in DETAIL) when any epoch is no longer the
-- current one. It also bounds how long this session may then sit idle inside the transaction (a
-- frozen writer must not hold a fence, and with it a takeover, for longer than that).
CREATE FUNCTION partition_fence_check(p_site text, p_parts integer[], p_epochs bigint[], p_idle text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stale integer[];
BEGIN
    PERFORM set_config('idle_in_transaction_session_timeout', p_idle, true);
    PERFORM 1 FROM partition_fences WHERE site_id = p_site AND partition = ANY (p_parts)
        ORDER BY partition FOR SHARE;
    SELECT array_agg(x.p ORDER BY x.p) INTO stale
        FROM unnest(p_parts, p_epochs) AS x(p, e)
        LEFT JOIN partition_fences f ON f.site_id = p_site AND f.partition = x.p
        WHERE f.epoch IS DISTINCT FROM x.e;
    IF stale IS NOT NULL THEN
        RAISE EXCEPTION 'stale partition epoch: this instance no longer holds partition(s) %', stale
            USING ERRCODE = 'PWF01', DETAIL = array_to_string(stale, ',');
    END IF;
END $$;
