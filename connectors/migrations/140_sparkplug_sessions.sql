-- Sparkplug B edge-node sessions as the host application knows them (connectors/sparkplug_births.py):
-- written in the same transaction as the message that changed them, read at start and when a
-- partition is taken over, so that data redelivered after a restart is understood without a
-- rebirth. One row per node (its NBIRTH: bdSeq, metric table) and one per device (its DBIRTH).
-- birth_order / seq_order are the arrival order of the message (units commit in parallel: an
-- older message never overwrites a newer one's state).
CREATE TABLE sparkplug_nodes (
    grp         text NOT NULL,
    node        text NOT NULL,
    bd_seq      bigint,
    -- the node's metric table from its NBIRTH: {"aliases": {alias: name}, "types": {name: datatype}};
    -- NULL: no birth known (only a sequence number was seen)
    metrics     jsonb,
    birth_order bigint NOT NULL DEFAULT 0,
    seq         integer,
    seq_order   bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grp, node)
);

CREATE TABLE sparkplug_devices (
    grp         text NOT NULL,
    node        text NOT NULL,
    device      text NOT NULL,
    metrics     jsonb NOT NULL,
    birth_order bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grp, node, device)
);
