-- Node sets (docs/accounts.md): the nodes whose OAR property PROPERTY is
-- VALUE, kept for the users and groups of users granted them.  Everyone
-- else's cloud jobs are kept off them by the admission rule (a clause added
-- to the job's properties) and refused by the prologue if they land there.
CREATE TABLE node_sets (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    property    text NOT NULL CHECK (property ~ '^[a-z][a-z0-9_]{0,30}$'),
    value       text NOT NULL CHECK (value ~ '^[A-Za-z0-9._-]{1,64}$'),
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (property, value)
);
CREATE TABLE node_set_grants (
    node_set    text NOT NULL REFERENCES node_sets(name) ON DELETE CASCADE,
    account     text REFERENCES accounts(name) ON DELETE CASCADE,
    usergroup   text REFERENCES usergroups(name) ON DELETE CASCADE,
    CHECK (num_nonnulls(account, usergroup) = 1),
    UNIQUE NULLS NOT DISTINCT (node_set, account, usergroup)
);
GRANT SELECT ON node_sets, node_set_grants TO oarcloud_users;
ALTER TABLE node_set_grants ENABLE ROW LEVEL SECURITY;
-- Which sets exist is no secret (it is in OAR's own properties); who else
-- may use one is.
CREATE POLICY own_node_set_grants ON node_set_grants FOR SELECT TO oarcloud_users
    USING (account = current_user OR usergroup IN (SELECT usergroups_of(current_user)));
