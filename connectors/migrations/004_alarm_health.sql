-- Alarm-system health (EEMUA 191 / ISA-18.2) for dashboards and `plantwatch alarms report`.
-- An *activation* is an alarm annunciated by its detector: a change to 'unack' from any other
-- state, caused by the detector (raised, raised again, or worsened while acknowledged). Alarms
-- raised while shelved, suppressed or out of service are not annunciated and not counted.

CREATE VIEW alarm_activations AS
SELECT c.id, c.alarm_id, c.time, a.detector_id, s.tag AS sensor, s.area_id AS area,
       coalesce(p.position, 'site') AS position, c.condition, c.severity,
       CASE c.severity WHEN 'critical' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 3 ELSE 4 END AS priority
FROM alarm_changes c
JOIN alarms a ON a.id = c.alarm_id
JOIN sensors s ON s.id = a.sensor_id
LEFT JOIN operator_positions p ON p.area_id = s.area_id
WHERE c.to_state = 'unack' AND c.from_state <> 'unack' AND c.cause->>'by' = 'detector';

-- Alarms per operator position per 10 minutes (EEMUA 191: ~1 is very likely acceptable;
-- more than 10 is a flood).
CREATE VIEW alarm_rate_10m AS
SELECT position, to_timestamp(floor(extract(epoch FROM time) / 600) * 600) AS bucket,
       count(*) AS alarms, count(*) > 10 AS flood
FROM alarm_activations GROUP BY 1, 2;

CREATE VIEW alarm_rate_daily AS
SELECT position, date_trunc('day', time) AS day, count(*) AS alarms
FROM alarm_activations GROUP BY 1, 2;

-- Chattering: an activation that is the third (or later) of its alarm within one minute.
CREATE VIEW alarm_chattering AS
SELECT alarm_id, detector_id, sensor, position, time
FROM (SELECT *, lag(time, 2) OVER (PARTITION BY alarm_id ORDER BY time) AS t2 FROM alarm_activations) x
WHERE t2 IS NOT NULL AND time - t2 <= interval '60 seconds';

-- Stale: active for 24 hours or more.
CREATE VIEW alarm_stale AS
SELECT a.id AS alarm_id, a.detector_id, s.tag AS sensor, a.state, a.severity, a.priority, a.raised_at,
       now() - a.raised_at AS active_for
FROM alarms a JOIN sensors s ON s.id = a.sensor_id
WHERE a.active AND a.raised_at <= now() - interval '24 hours';

CREATE VIEW alarm_bad_actors AS
SELECT alarm_id, detector_id, sensor, position, count(*) AS activations, max(time) AS last_activation
FROM alarm_activations GROUP BY alarm_id, detector_id, sensor, position;

CREATE VIEW alarm_state_counts AS
SELECT state, count(*) AS alarms FROM alarms GROUP BY state;

CREATE VIEW alarm_priority_distribution AS
SELECT priority, count(*) AS activations FROM alarm_activations GROUP BY priority;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plantwatch_reader') THEN
        GRANT SELECT ON alarm_activations, alarm_rate_10m, alarm_rate_daily, alarm_chattering, alarm_stale,
            alarm_bad_actors, alarm_state_counts, alarm_priority_distribution TO plantwatch_reader;
    END IF;
END
$$;
