-- Alarm journal entries already written to the database (connectors/alarm_journal.py).
-- Alarm changes are decided and published before the database commits them, and kept in a local
-- journal until it does. Each journal entry (one pipeline unit's alarm operations) commits with
-- its key in this table, in the same transaction: replaying the journal after a restart skips
-- what is here, so a change is written exactly once whatever moment the daemon stopped at.
CREATE TABLE alarm_journal_applied (
    key        text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plantwatch_reader') THEN
        GRANT SELECT ON alarm_journal_applied TO plantwatch_reader;
    END IF;
END
$$;
