-- The daemon's persistent MQTT sessions (connectors/broker_sessions.py). A client id listed here
-- has had its session established at the broker: a later connect that finds no session there
-- (CONNACK session present = 0) means the broker lost what it had queued for it (a broker crash
-- before its autosave, a wiped persistence store, another client connecting with this client id
-- and a clean session), and the daemon raises a system alarm.
CREATE TABLE mqtt_sessions (
    site_id         text NOT NULL,
    client_id       text NOT NULL,
    first_connected timestamptz NOT NULL DEFAULT now(),
    last_connected  timestamptz NOT NULL DEFAULT now(),
    -- how often the session was found gone
    lost            bigint NOT NULL DEFAULT 0,
    last_lost       timestamptz,
    PRIMARY KEY (site_id, client_id)
);
