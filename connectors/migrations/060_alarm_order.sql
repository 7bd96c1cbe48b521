-- The alarm record in causal order (docs/alarms.md, "Order of the alarm record").
-- Every alarm change and operator action carries its audit sequence number (`seq`, gapless and
-- monotonic in the order the single alarm write path committed them) and its processing time
-- (`recorded_at`) beside its reading time (`time`); timelines sort by `seq`.
-- An alarm keeps the area where it was raised (`alarms.area_id`; each change's `area_id`), so a
-- robot alarm stays where it was raised and the alarm-health views count it there.

ALTER TABLE alarm_changes ADD COLUMN seq bigint, ADD COLUMN recorded_at timestamptz DEFAULT clock_timestamp(),
    ADD COLUMN area_id text;
ALTER TABLE operator_actions ADD COLUMN seq bigint, ADD COLUMN recorded_at timestamptz DEFAULT clock_timestamp();
ALTER TABLE alarms ADD COLUMN area_id text;

UPDATE alarm_changes c SET seq = l.seq, recorded_at = l.time
FROM audit_log l WHERE l.ref = 'alarm_change:' || c.id;
UPDATE operator_actions o SET seq = l.seq, recorded_at = l.time
FROM audit_log l WHERE l.ref = 'operator_action:' || o.id;
UPDATE alarm_changes c SET area_id = c.cause->>'area' WHERE c.cause ? 'area';
UPDATE alarms a SET area_id = (SELECT c.cause->>'area' FROM alarm_changes c
                               WHERE c.alarm_id = a.id AND c.to_state = 'unack' AND c.cause ? 'area'
                               ORDER BY c.id DESC LIMIT 1);

CREATE INDEX alarm_changes_seq ON alarm_changes (seq);
CREATE INDEX operator_actions_seq ON operator_actions (seq);

CREATE OR REPLACE VIEW alarm_activations AS
SELECT c.id, c.alarm_id, c.time, a.detector_id, s.tag AS sensor, coalesce(c.area_id, a.area_id, s.area_id) AS area,
       coalesce(p.position, 'site') AS position, c.condition, c.severity,
       CASE c.severity WHEN 'critical' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 3 ELSE 4 END AS priority
FROM alarm_changes c
JOIN alarms a ON a.id = c.alarm_id
JOIN sensors s ON s.id = a.sensor_id
LEFT JOIN operator_positions p ON p.area_id = coalesce(c.area_id, a.area_id, s.area_id)
WHERE c.to_state = 'unack' AND c.from_state <> 'unack' AND c.cause->>'by' = 'detector';
