-- Partition leases for several daemon instances sharing one site (daemon/cluster.py): a
-- partition (a set of collectors) is processed by the lease holder only; a lease that is not
-- renewed before expires_at may be taken by another instance, which bumps epoch.
CREATE TABLE partition_leases (
    site_id     text NOT NULL,
    partition   integer NOT NULL,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    epoch       bigint NOT NULL DEFAULT 1,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, partition)
);

-- Live instances (heartbeat), so that each can take its fair share of the partitions.
CREATE TABLE cluster_members (
    site_id     text NOT NULL,
    instance_id text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (site_id, instance_id)
);
