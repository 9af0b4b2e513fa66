-- Step rules of scaling groups (docs/groups.md): when a metric, aggregated
-- over the running members (avg, max, min; any or all of them breaching),
-- breaches for `periods` periods in a row, the desired size changes by
-- `change` members (cooldowns and bounds hold).
CREATE TABLE group_rules (
    id          serial PRIMARY KEY,
    group_id    integer NOT NULL REFERENCES scaling_groups(id) ON DELETE CASCADE,
    metric      text NOT NULL CHECK (metric ~ '^(lb\.)?[a-z_]{1,20}$'),
    agg         text NOT NULL CHECK (agg IN ('avg', 'max', 'min', 'any', 'all')),
    op          text NOT NULL CHECK (op IN ('gt', 'ge', 'lt', 'le')),
    threshold   double precision NOT NULL,
    periods     integer NOT NULL DEFAULT 1 CHECK (periods BETWEEN 1 AND 100),
    change      integer NOT NULL CHECK (change <> 0 AND change BETWEEN -100 AND 100),
    created     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX group_rules_group ON group_rules (group_id);
GRANT SELECT ON group_rules TO oarcloud_users;
ALTER TABLE group_rules ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_group_rules ON group_rules FOR SELECT TO oarcloud_users
    USING (EXISTS (SELECT 1 FROM scaling_groups g WHERE g.id = group_id
                   AND g.owner = current_user));
