-- Declared material transfers (tank fills and draw-offs). The unexplained-loss detector compares
-- inventory falls with these; the table is the record an inspector checks a loss against.
CREATE TABLE transfers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    declared_at timestamptz NOT NULL DEFAULT now(),
    sensor_id   integer NOT NULL REFERENCES sensors (id),
    start_at    timestamptz NOT NULL,
    end_at      timestamptz NOT NULL,
    quantity    double precision NOT NULL,   -- > 0 leaves the tank, < 0 enters it
    declared_by text NOT NULL DEFAULT '',
    reference   text NOT NULL DEFAULT '',
    msg_key     text NOT NULL UNIQUE          -- a redelivered declaration is recorded once
);
CREATE INDEX transfers_sensor_time ON transfers (sensor_id, start_at);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plantwatch_reader') THEN
        GRANT SELECT ON transfers TO plantwatch_reader;
    END IF;
END
$$;
