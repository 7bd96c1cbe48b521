-- Hourly rollups, computed by plantwatch from the one-minute rollups once an hour has closed
-- (and again if late readings change one of its minutes). Dashboards over days or weeks read
-- these: 168 rows per sensor for 7 days instead of 10,080 one-minute rows.
CREATE TABLE readings_1h (
    bucket      timestamptz NOT NULL,
    sensor_id   integer NOT NULL,
    n           integer NOT NULL,
    avg         double precision NOT NULL,
    min         double precision NOT NULL,
    max         double precision NOT NULL,
    last        double precision NOT NULL,
    PRIMARY KEY (sensor_id, bucket)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('readings_1h', 'bucket', chunk_time_interval => interval '365 days');
    ELSE
        CREATE INDEX readings_1h_bucket ON readings_1h (bucket);
    END IF;
END
$$;
