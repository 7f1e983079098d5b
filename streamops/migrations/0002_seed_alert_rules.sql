-- Default alert rules, so a fresh stack alerts on something out of the box.
-- INSERT IGNORE: a rule an operator already created, edited or disabled under the same id is
-- left exactly as it is.

INSERT IGNORE INTO alert_rules
    (rule_id, level, service, window_seconds, threshold_count, enabled, description)
VALUES
    ('error-burst-any-service', 'ERROR', NULL, 10, 5, TRUE,
     'at least 5 ERROR lines within 10 seconds, from any service'),
    ('critical-any-service', 'CRITICAL', NULL, 60, 1, TRUE,
     'any CRITICAL line from any service');
