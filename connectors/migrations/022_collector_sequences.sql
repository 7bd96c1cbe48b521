-- Sequence accounting per episode of a collector's counter (daemon/sequences.py): the state after
-- the latest batch in arrival order (seq_order) rather than the greatest seq ever seen, restarts
-- of the counter (backwards, or an implausible jump forward), and the gaps of the current episode.
ALTER TABLE collectors
    ADD COLUMN restarts     bigint NOT NULL DEFAULT 0,
    ADD COLUMN seq_sent     timestamptz,
    ADD COLUMN episode_gaps bigint NOT NULL DEFAULT 0,
    ADD COLUMN seq_order    bigint NOT NULL DEFAULT 0;
