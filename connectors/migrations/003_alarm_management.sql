-- Alarm management (ISA-18.2 / IEC 62682): operator actions, shelving, out of service,
-- incidents, and the tamper-evident audit chain. Written by daemon/lifecycle.py through the
-- one ordered alarm write path (connectors/alarm_db.py); read by the API, CLI and dashboards.

-- Priority 1 (most urgent) .. 4, derived from the severity (which is configured per detector
-- and condition): critical 1, high 2, medium 3, low 4.
ALTER TABLE alarms
    ADD COLUMN priority        smallint GENERATED ALWAYS AS (
        CASE severity WHEN 'critical' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 3 ELSE 4 END) STORED,
    ADD COLUMN shelved_at      timestamptz,
    ADD COLUMN shelved_until   timestamptz,
    ADD COLUMN shelved_by      text,
    ADD COLUMN oos_at          timestamptz,
    ADD COLUMN oos_by          text,
    ADD COLUMN suppressed_by   text,          -- the upstream alarm that suppresses this one (by design)
    ADD COLUMN state_reason    text,          -- why the alarm is in a hidden state (operator's words)
    ADD COLUMN incident_id     bigint;

-- Every operator (or system) action on an alarm: who, when, why, and what it did.
CREATE TABLE operator_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time        timestamptz NOT NULL,
    alarm_id    bigint REFERENCES alarms (id),
    action      text NOT NULL,     -- ack, shelve, unshelve, shelve_expired, out_of_service, return_to_service, comment
    actor       text NOT NULL,     -- token name, or 'system'
    role        text NOT NULL,     -- operator, engineer, inspector, system
    reason      text NOT NULL DEFAULT '',
    params      jsonb NOT NULL DEFAULT '{}',
    from_state  text,
    to_state    text
);
CREATE INDEX operator_actions_alarm ON operator_actions (alarm_id, time);
CREATE INDEX operator_actions_time ON operator_actions (time DESC);

-- Incidents: related alarms (same area or neighbouring sensors within a time window), the
-- first being the cause and the others its consequences.
CREATE TABLE incidents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         text NOT NULL UNIQUE,             -- daemon-generated, refers to the incident in ops
    site_id     text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    last_alarm_at timestamptz NOT NULL,
    title       text NOT NULL DEFAULT '',
    areas       text[] NOT NULL DEFAULT '{}',
    sensors     text[] NOT NULL DEFAULT '{}',
    cause_alarm_id bigint REFERENCES alarms (id),
    config_hash text REFERENCES config_versions (hash),  -- the config in force when it started
    flood       boolean NOT NULL DEFAULT false           -- started or grew during an alarm flood
);
CREATE INDEX incidents_time ON incidents (started_at DESC);

CREATE TABLE incident_alarms (
    incident_id bigint NOT NULL REFERENCES incidents (id),
    alarm_id    bigint NOT NULL REFERENCES alarms (id),
    role        text NOT NULL,                     -- cause | consequence
    raised_at   timestamptz NOT NULL,
    condition   text NOT NULL,
    severity    text NOT NULL,
    PRIMARY KEY (incident_id, alarm_id, raised_at)
);
CREATE INDEX incident_alarms_alarm ON incident_alarms (alarm_id);

-- Operator positions (consoles) and the areas they watch, synced from the config.
CREATE TABLE operator_positions (
    area_id     text PRIMARY KEY,
    position    text NOT NULL
);

-- The tamper-evident record: an append-only hash chain.
--   hash = sha256(prev_hash || canonical JSON of {seq, time, kind, ref, body})
-- seq is gapless (taken from audit_head under its row lock), so a deleted row leaves a gap and
-- a broken link; audit_head holds the last seq and hash so a deletion at the end is found too.
CREATE TABLE audit_log (
    seq         bigint PRIMARY KEY,
    time        timestamptz NOT NULL,
    kind        text NOT NULL,     -- config, alarm_change, operator_action, incident
    ref         text NOT NULL,     -- e.g. alarm_change:42, incident:7
    body        jsonb NOT NULL,
    prev_hash   text NOT NULL,
    hash        text NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time);
CREATE INDEX audit_log_ref ON audit_log (ref);

CREATE TABLE audit_head (
    id          integer PRIMARY KEY CHECK (id = 1),
    seq         bigint NOT NULL,
    hash        text NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, repeat('0', 64));

-- Defence in depth: only superusers may UPDATE, DELETE or TRUNCATE the chain (the daemon
-- should not run as one). The hash chain still detects what a superuser does.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND rolsuper) THEN
        RAISE EXCEPTION 'audit_log is append-only (% refused for %)', TG_OP, current_user;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plantwatch_reader') THEN
        GRANT SELECT ON operator_actions, incidents, incident_alarms, operator_positions, audit_log, audit_head
            TO plantwatch_reader;
    END IF;
END
$$;
