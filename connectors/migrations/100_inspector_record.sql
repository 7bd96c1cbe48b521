-- The inspector's record (docs/audit.md): readings sealed in time slices, the config an
-- inspector may read, and read access for the read-only role to what a report shows.
--
-- seal_state: how far readings are sealed (every slice before `sealed_until` has its digests in
-- the audit chain, kind 'seal'). The chain itself is the authority: audit verify reads the
-- sealed range from the last seal entry, never from this row.
CREATE TABLE seal_state (
    id           integer PRIMARY KEY CHECK (id = 1),
    sealed_until timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO seal_state (id, sealed_until) VALUES (1, NULL);

-- What of a config an inspector may read: the site, sensors, detectors and alarm settings,
-- without credentials (mqtt, database, api, notify). Chained with the config's hash.
ALTER TABLE config_versions ADD COLUMN public_content text NOT NULL DEFAULT '';

-- The digest of each dead letter's payload, for readers that may not read the payload itself.
CREATE VIEW v_dead_letter_digests AS
SELECT id, received_at, topic, collector, seq, reason, detail, msg_key,
       encode(sha256(payload), 'hex') AS payload_sha256
FROM dead_letters;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plantwatch_reader') THEN
        GRANT SELECT ON seal_state, schema_migrations, v_dead_letter_digests TO plantwatch_reader;
        GRANT SELECT (hash, first_loaded_at, last_loaded_at, public_content) ON config_versions TO plantwatch_reader;
    END IF;
END
$$;
