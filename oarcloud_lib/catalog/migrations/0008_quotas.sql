-- Quotas (F.a.4, docs/quotas.md): per-account limits on what an account holds
-- at once.  account NULL is the site's default for every account without its
-- own limit.  What is used is counted from the live objects, never stored.
CREATE TABLE quotas (
    account     text REFERENCES accounts(name) ON DELETE CASCADE,
    resource    text NOT NULL CHECK (resource IN ('instances', 'cores', 'memory',
                    'images-bytes', 'networks', 'published-ports', 'vpn-clients',
                    'alarms', 'targets')),
    max         bigint NOT NULL CHECK (max >= 0),
    updated     timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (account, resource)
);
GRANT SELECT ON quotas TO oarcloud_users;
ALTER TABLE quotas ENABLE ROW LEVEL SECURITY;
-- A user reads their own limits and the site's defaults.
CREATE POLICY own_quotas ON quotas FOR SELECT TO oarcloud_users
    USING (account IS NULL OR account = current_user);
