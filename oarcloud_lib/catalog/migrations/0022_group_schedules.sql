-- Scheduled sizes of scaling groups (oarcloud group schedule): at each time a
-- cron expression gives (the server's local time), or once at a given time,
-- the group's desired size (and its bounds, when given) is set; the scaler
-- applies it (service/groups.py) and records it in the group's history.
CREATE TABLE group_schedules (
    id              serial PRIMARY KEY,
    group_id        integer NOT NULL REFERENCES scaling_groups(id) ON DELETE CASCADE,
    cron            text,
    at              timestamptz,
    desired         integer CHECK (desired BETWEEN 0 AND 100),
    min_size        integer CHECK (min_size BETWEEN 0 AND 100),
    max_size        integer CHECK (max_size BETWEEN 1 AND 100),
    last_run        timestamptz,
    created         timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (at IS NULL)),
    CHECK (desired IS NOT NULL OR min_size IS NOT NULL OR max_size IS NOT NULL)
);
CREATE INDEX group_schedules_group ON group_schedules (group_id);
GRANT SELECT ON group_schedules TO oarcloud_users;
ALTER TABLE group_schedules ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_group_schedules ON group_schedules FOR SELECT TO oarcloud_users
    USING (EXISTS (SELECT 1 FROM scaling_groups g WHERE g.id = group_id
                   AND g.owner = current_user));
-- A member of an own job is replaced this many seconds before its walltime ends.
ALTER TABLE scaling_groups ADD COLUMN replace_before integer NOT NULL DEFAULT 300
    CHECK (replace_before >= 0);
-- Vertical first: members grow up to this many cores (live resize) before
-- the group adds members (NULL: never).
ALTER TABLE scaling_groups ADD COLUMN vertical_cores integer CHECK (vertical_cores > 0);
