-- Read-only access for Grafana: the role plantwatch_reader and the views the dashboards query.
--
-- Everything here works on plain PostgreSQL (14+) as well as on TimescaleDB: the views use no
-- TimescaleDB function. Dashboards that group by time use Grafana's $__timeGroup macro, which
-- becomes time_bucket() only when the data source's "TimescaleDB" option is on.
--
-- Rule for everyone adding views for Grafana in later migrations (003+): GRANT SELECT on the new
-- view to plantwatch_reader explicitly. There are deliberately no default privileges: a table
-- added later (e.g. one holding credentials) must not become readable by Grafana by accident.

-- Configured alarm setpoints per sensor, so gas panels can show readings against their limits.
-- Written by the daemon when it loads a config (one row per limit detector and sensor it
-- watches); empty until then, and the panels show blank limit columns.
CREATE TABLE sensor_limits (
    sensor_id   integer NOT NULL REFERENCES sensors (id),
    detector_id text NOT NULL,
    low_low     double precision,
    low         double precision,
    high        double precision,
    high_high   double precision,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, detector_id)
);

-- Latest reading per sensor. One LATERAL index probe per sensor on readings_sensor_time
-- (sensor_id, time DESC): never a scan of readings, whatever its size.
CREATE VIEW v_latest_readings AS
SELECT s.id AS sensor_id, s.tag, s.area_id, s.kind, s.quantity, s.unit,
       s.range_min, s.range_max, s.x, s.y,
       r.time, r.value, r.quality,
       extract(epoch FROM now() - r.time)::double precision AS age_s
FROM sensors s
LEFT JOIN LATERAL (
    SELECT rr.time, rr.value, rr.quality
    FROM readings rr
    WHERE rr.sensor_id = s.id
    ORDER BY rr.time DESC
    LIMIT 1
) r ON true
WHERE NOT s.retired;

-- Gas sensors: latest value against the configured setpoints (the tightest of all detectors).
CREATE VIEW v_gas_readings AS
SELECT l.sensor_id, l.tag, l.area_id, l.quantity, l.unit, l.time, l.value, l.quality, l.age_s,
       lim.high, lim.high_high,
       CASE WHEN lim.high > 0 THEN 100.0 * l.value / lim.high END AS pct_of_high
FROM v_latest_readings l
LEFT JOIN LATERAL (
    SELECT min(sl.high) AS high, min(sl.high_high) AS high_high
    FROM sensor_limits sl
    WHERE sl.sensor_id = l.sensor_id
) lim ON true
WHERE l.kind = 'gas';

-- Health of each fixed sensor, worst first:
--   no_data   never reported;
--   fault     last reading has quality bad (2) or lies outside the instrument range
--             (4-20 mA detectors signal faults below 4 mA, which lands below range_min);
--   stale     no reading for 300 s, or a stale detector holds an open event on it;
--   uncertain last reading has quality uncertain (1);
--   ok        otherwise.
-- Robot channels report only when a robot passes by, so they are never "stale".
CREATE VIEW v_sensor_status AS
SELECT l.sensor_id, l.tag, l.area_id, l.kind, l.quantity, l.unit, l.time AS last_time,
       l.value AS last_value, l.quality AS last_quality, l.age_s,
       CASE
           WHEN l.time IS NULL THEN 'no_data'
           WHEN l.quality = 2 OR l.value < l.range_min OR l.value > l.range_max THEN 'fault'
           WHEN l.kind <> 'robot' AND (l.age_s > 300 OR st.open_stale) THEN 'stale'
           WHEN l.quality = 1 THEN 'uncertain'
           ELSE 'ok'
       END AS status
FROM v_latest_readings l
LEFT JOIN LATERAL (
    SELECT true AS open_stale
    FROM events e
    WHERE e.sensor_id = l.sensor_id AND e.ended_at IS NULL AND e.condition = 'stale'
    LIMIT 1
) st ON true;

-- Alarms an operator has to look at: active (acknowledged or not) or returned to normal but not
-- yet acknowledged. Shelved, suppressed and out-of-service alarms are not in this list.
CREATE VIEW v_active_alarms AS
SELECT a.id, a.detector_id, a.state, a.active, a.condition,
       a.severity AS priority,
       CASE a.severity WHEN 'critical' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 3 ELSE 4 END AS priority_rank,
       a.raised_at, a.acked_at, a.acked_by, a.event_id,
       s.tag, s.area_id, s.kind, s.quantity, s.unit,
       extract(epoch FROM now() - a.raised_at)::double precision AS age_s
FROM alarms a
JOIN sensors s ON s.id = a.sensor_id
WHERE a.state IN ('unack', 'ack', 'rtn_unack');

-- Readings stored per minute, from the one-minute rollup (never from raw readings). A time
-- filter on "time" reaches the rollup's bucket column, so range queries use its index.
CREATE VIEW v_ingest_rate AS
SELECT r.bucket AS time, sum(r.n)::bigint AS readings, count(*)::bigint AS sensors_reporting
FROM readings_1m r
GROUP BY r.bucket;

-- Latest robot reading per robot channel with its position on the site map.
CREATE VIEW v_robot_latest AS
SELECT s.id AS sensor_id, s.tag, s.quantity, s.unit, r.time, r.value, r.quality, r.x, r.y,
       coalesce(r.area_id, '') AS area_id
FROM sensors s
JOIN LATERAL (
    SELECT rr.time, rr.value, rr.quality, rr.x, rr.y, rr.area_id
    FROM robot_readings rr
    WHERE rr.sensor_id = s.id
    ORDER BY rr.time DESC
    LIMIT 1
) r ON true
WHERE s.kind = 'robot' AND NOT s.retired;

-- The read-only role Grafana logs in with. It is created LOGIN without a password: the site
-- sets one (deploy/site does it in the database's init script, before this migration runs):
--     ALTER ROLE plantwatch_reader PASSWORD '...';
-- Roles are cluster-wide, so the role may already exist (another database of the same cluster,
-- or the site created it first): then only the settings and grants below are applied.
-- Creating and altering the role needs CREATEROLE; without it this part is skipped with a
-- warning and deploy/README.md lists the statements a DBA runs instead.
DO $$
DECLARE
    can_manage boolean;
BEGIN
    SELECT rolsuper OR rolcreaterole INTO can_manage FROM pg_roles WHERE rolname = current_user;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plantwatch_reader') THEN
        IF NOT can_manage THEN
            RAISE WARNING 'plantwatch: role plantwatch_reader does not exist and % may not create roles; '
                          'Grafana access is not set up (see deploy/README.md)', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE plantwatch_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
                NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- created meanwhile by a migration of another database in this cluster
        END;
    END IF;
    IF can_manage THEN
        -- Session defaults applied at every login. A session can change them back (they are
        -- ordinary settings), so they are a second line: the first line is that the role owns
        -- nothing and is granted SELECT only. statement_timeout stops a dashboard query over a
        -- huge range from holding a connection; a query interrupted here shows as a panel error.
        ALTER ROLE plantwatch_reader SET default_transaction_read_only = on;
        ALTER ROLE plantwatch_reader SET statement_timeout = '10s';
        ALTER ROLE plantwatch_reader SET idle_in_transaction_session_timeout = '60s';
        ALTER ROLE plantwatch_reader SET lock_timeout = '2s';
    ELSE
        RAISE WARNING 'plantwatch: % may not alter roles; set default_transaction_read_only = on and '
                      'statement_timeout = 10s for plantwatch_reader (see deploy/README.md)', current_user;
    END IF;

    EXECUTE format('GRANT CONNECT ON DATABASE %I TO plantwatch_reader', current_database());
    -- Temporary tables and functions are the only objects a SELECT-only role could still create
    -- (PUBLIC has TEMPORARY on every database by default); take that from PUBLIC and keep it for
    -- the role that runs plantwatch (its ingest stages readings in a temporary table).
    -- Likewise CREATE on schema public, which databases created before PostgreSQL 15 grant to
    -- PUBLIC. Only the owner of the database / schema can revoke: otherwise these are no-ops
    -- with a warning, and deploy/README.md says what the DBA should run.
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), current_user);
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CREATE ON SCHEMA public TO %I', current_user);
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    REVOKE ALL ON SCHEMA public FROM plantwatch_reader;
    GRANT USAGE ON SCHEMA public TO plantwatch_reader;

    -- What the dashboards read, and nothing else: not detector_state, not config_versions (a
    -- config may hold broker credentials), not schema_migrations.
    GRANT SELECT ON sites, areas, sensors, readings, robot_readings, readings_1m, collectors,
                    events, alarms, alarm_changes, sensor_limits
        TO plantwatch_reader;
    -- dead_letters: everything but the refused payload itself.
    GRANT SELECT (id, received_at, topic, collector, seq, reason, detail) ON dead_letters TO plantwatch_reader;
    GRANT SELECT ON v_latest_readings, v_gas_readings, v_sensor_status, v_active_alarms,
                    v_ingest_rate, v_robot_latest
        TO plantwatch_reader;
END
$$;
