-- plantwatch core schema. Applied once, inside a transaction, by connectors/store.py.
-- Hypertables are created only where TimescaleDB is installed; on plain PostgreSQL the same
-- tables are ordinary tables with the same unique indexes (BRIN on time for range scans).

CREATE TABLE sites (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    width       double precision NOT NULL,
    height      double precision NOT NULL
);

CREATE TABLE areas (
    id          text PRIMARY KEY,
    site_id     text NOT NULL REFERENCES sites (id),
    name        text NOT NULL DEFAULT '',
    x0 double precision, y0 double precision, x1 double precision, y1 double precision
);

-- The sensor registry as loaded from the config. Readings refer to sensors by a small integer
-- id that never changes for a tag, so renaming an area or a unit keeps the history.
CREATE TABLE sensors (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tag         text NOT NULL UNIQUE,
    site_id     text NOT NULL REFERENCES sites (id),
    area_id     text NOT NULL,
    kind        text NOT NULL,
    quantity    text NOT NULL DEFAULT '',
    unit        text NOT NULL,
    range_min   double precision NOT NULL,
    range_max   double precision NOT NULL,
    x           double precision,
    y           double precision,
    description text NOT NULL DEFAULT '',
    retired     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- quality: 0 good, 1 uncertain, 2 bad
CREATE TABLE readings (
    time        timestamptz NOT NULL,
    sensor_id   integer NOT NULL,
    value       double precision NOT NULL,
    quality     smallint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX readings_sensor_time ON readings (sensor_id, time DESC);

CREATE TABLE robot_readings (
    time        timestamptz NOT NULL,
    sensor_id   integer NOT NULL,
    value       double precision NOT NULL,
    quality     smallint NOT NULL DEFAULT 0,
    x           double precision NOT NULL,
    y           double precision NOT NULL,
    area_id     text
);
CREATE UNIQUE INDEX robot_readings_sensor_time ON robot_readings (sensor_id, time DESC);

-- One-minute rollups maintained by plantwatch itself (works on the Apache edition of
-- TimescaleDB and on plain PostgreSQL, where continuous aggregates are not available).
CREATE TABLE readings_1m (
    bucket      timestamptz NOT NULL,
    sensor_id   integer NOT NULL,
    n           integer NOT NULL,
    avg         double precision NOT NULL,
    min         double precision NOT NULL,
    max         double precision NOT NULL,
    last        double precision NOT NULL,
    PRIMARY KEY (sensor_id, bucket)
);

-- Every payload or reading that was refused, with the reason, kept for inspection.
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    collector   text,
    seq         bigint,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     bytea NOT NULL,
    -- idempotency: a redelivered message must not dead-letter the same item twice
    msg_key     text NOT NULL,
    UNIQUE (msg_key)
);
CREATE INDEX dead_letters_received ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at DESC);

-- Per-collector sequence tracking (gaps = batches lost between collector and broker).
CREATE TABLE collectors (
    id          text PRIMARY KEY,
    last_seq    bigint NOT NULL,
    last_seen   timestamptz NOT NULL,
    batches     bigint NOT NULL DEFAULT 0,
    gaps        bigint NOT NULL DEFAULT 0
);

-- Detector events: one row per span in which a detector held a sensor in a non-normal
-- condition. ended_at is NULL while the event is open.
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    detector_id text NOT NULL,
    detector    jsonb NOT NULL,            -- type and parameters in force
    sensor_id   integer NOT NULL REFERENCES sensors (id),
    condition   text NOT NULL,
    severity    text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    start_score double precision NOT NULL,
    peak_score  double precision NOT NULL,
    UNIQUE (detector_id, sensor_id, started_at)
);
CREATE INDEX events_open ON events (detector_id, sensor_id) WHERE ended_at IS NULL;
CREATE INDEX events_time ON events (started_at DESC);

-- Alarms: one row per (detector, sensor). ISA-18.2 state:
--   normal, unack (active, unacknowledged), ack (active, acknowledged),
--   rtn_unack (returned to normal, unacknowledged), shelved, suppressed, out_of_service.
CREATE TABLE alarms (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    detector_id text NOT NULL,
    sensor_id   integer NOT NULL REFERENCES sensors (id),
    state       text NOT NULL DEFAULT 'normal',
    active      boolean NOT NULL DEFAULT false,
    condition   text NOT NULL DEFAULT 'normal',
    severity    text NOT NULL DEFAULT 'low',
    event_id    bigint REFERENCES events (id),
    raised_at   timestamptz,
    cleared_at  timestamptz,
    acked_at    timestamptz,
    acked_by    text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (detector_id, sensor_id)
);
CREATE INDEX alarms_active ON alarms (severity, raised_at) WHERE state <> 'normal';

-- Every alarm change, with its time and cause (append-only).
CREATE TABLE alarm_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alarm_id    bigint NOT NULL REFERENCES alarms (id),
    time        timestamptz NOT NULL,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    condition   text NOT NULL,
    severity    text NOT NULL,
    cause       jsonb NOT NULL             -- {"by": "detector"|"operator"|..., ...}
);
CREATE INDEX alarm_changes_alarm ON alarm_changes (alarm_id, time);
CREATE INDEX alarm_changes_time ON alarm_changes (time DESC);

-- Learned detector state, so a restart does not repeat warm-up.
CREATE TABLE detector_state (
    detector_id text PRIMARY KEY,
    fingerprint text NOT NULL,   -- detector type, parameters and watched sensors
    state       bytea NOT NULL,
    saved_at    timestamptz NOT NULL DEFAULT now()
);

-- Every config the daemon loaded.
CREATE TABLE config_versions (
    hash        text PRIMARY KEY,
    first_loaded_at timestamptz NOT NULL DEFAULT now(),
    last_loaded_at  timestamptz NOT NULL DEFAULT now(),
    content     text NOT NULL
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('readings', 'time', chunk_time_interval => interval '1 day');
        PERFORM create_hypertable('robot_readings', 'time', chunk_time_interval => interval '7 days');
        PERFORM create_hypertable('readings_1m', 'bucket', chunk_time_interval => interval '30 days');
    ELSE
        CREATE INDEX readings_time_brin ON readings USING brin (time);
        CREATE INDEX robot_readings_time_brin ON robot_readings USING brin (time);
        CREATE INDEX readings_1m_bucket ON readings_1m (bucket);
    END IF;
END
$$;
