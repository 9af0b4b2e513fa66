-- Groups of users (docs/accounts.md): an admin's named sets of accounts, used
-- to share images and networks (`@GROUP` wherever a user is given) and for
-- quotas that hold for the members together (`quota set @GROUP ...`).
CREATE TABLE usergroups (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    created     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE usergroup_members (
    usergroup   text NOT NULL REFERENCES usergroups(name) ON DELETE CASCADE,
    account     text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    PRIMARY KEY (usergroup, account)
);
CREATE INDEX usergroup_members_account ON usergroup_members (account);
-- The groups acct is in (for policies: a user may not read other members).
-- Like every SECURITY DEFINER function of the catalog, its search_path lists
-- pg_temp last: a user's temporary table cannot stand in for a catalog table.
CREATE FUNCTION usergroups_of(acct text) RETURNS SETOF text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
    AS $$ SELECT usergroup FROM usergroup_members WHERE account = acct $$;
GRANT SELECT ON usergroups, usergroup_members TO oarcloud_users;
ALTER TABLE usergroups ENABLE ROW LEVEL SECURITY;
ALTER TABLE usergroup_members ENABLE ROW LEVEL SECURITY;
-- A user sees their groups and who else is in them.
CREATE POLICY own_usergroups ON usergroups FOR SELECT TO oarcloud_users
    USING (name IN (SELECT usergroups_of(current_user)));
CREATE POLICY own_usergroup_members ON usergroup_members FOR SELECT TO oarcloud_users
    USING (usergroup IN (SELECT usergroups_of(current_user)));

-- An image shared with a user or with a group (exactly one of the two).
ALTER TABLE image_shares DROP CONSTRAINT image_shares_pkey;
ALTER TABLE image_shares ALTER COLUMN account DROP NOT NULL;
ALTER TABLE image_shares ADD COLUMN usergroup text REFERENCES usergroups(name)
    ON DELETE CASCADE;
ALTER TABLE image_shares ADD CONSTRAINT image_shares_one_grantee
    CHECK (num_nonnulls(account, usergroup) = 1);
ALTER TABLE image_shares ADD CONSTRAINT image_shares_unique
    UNIQUE NULLS NOT DISTINCT (image, account, usergroup);
DROP POLICY usable_images ON images;
CREATE POLICY usable_images ON images FOR SELECT TO oarcloud_users
    USING (visibility = 'public' OR owner = current_user
           OR EXISTS (SELECT 1 FROM image_shares s WHERE s.image = images.name
                      AND (s.account = current_user
                           OR s.usergroup IN (SELECT usergroups_of(current_user)))));
DROP POLICY own_shares ON image_shares;
CREATE POLICY own_shares ON image_shares FOR SELECT TO oarcloud_users
    USING (account = current_user OR usergroup IN (SELECT usergroups_of(current_user))
           OR image_owner(image) = current_user);

-- A network shared with a user or a group: they may attach instances to it
-- (OWNER/NAME); its rules, VPN and deletion stay its owner's.
CREATE TABLE network_shares (
    network     integer NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    account     text REFERENCES accounts(name) ON DELETE CASCADE,
    usergroup   text REFERENCES usergroups(name) ON DELETE CASCADE,
    created     timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(account, usergroup) = 1),
    UNIQUE NULLS NOT DISTINCT (network, account, usergroup)
);
CREATE FUNCTION may_use_network(network_id integer, acct text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM networks WHERE id = network_id AND owner = acct)
              OR EXISTS (SELECT 1 FROM network_shares WHERE network = network_id
                         AND (account = acct OR usergroup IN (SELECT usergroups_of(acct)))) $$;
GRANT SELECT ON network_shares TO oarcloud_users;
ALTER TABLE network_shares ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_network_shares ON network_shares FOR SELECT TO oarcloud_users
    USING (network_owner(network) = current_user OR account = current_user
           OR usergroup IN (SELECT usergroups_of(current_user)));
-- A user sees the networks they may attach to and their rules; the NICs of
-- their own networks and of their own instances (not other tenants' on a
-- network shared with them).
DROP POLICY own_networks ON networks;
CREATE POLICY own_networks ON networks FOR SELECT TO oarcloud_users
    USING (may_use_network(id, current_user));
DROP POLICY own_rules ON net_rules;
CREATE POLICY own_rules ON net_rules FOR SELECT TO oarcloud_users
    USING (may_use_network(network, current_user));
DROP POLICY own_nics ON nics;
CREATE POLICY own_nics ON nics FOR SELECT TO oarcloud_users
    USING (network_owner(network) = current_user
           OR domain IN (SELECT domain FROM instances WHERE owner = current_user));

-- Quotas of a group: limits on what its members hold together.
ALTER TABLE quotas ADD COLUMN usergroup text REFERENCES usergroups(name) ON DELETE CASCADE;
ALTER TABLE quotas ADD CONSTRAINT quotas_one_scope CHECK (account IS NULL OR usergroup IS NULL);
ALTER TABLE quotas DROP CONSTRAINT quotas_account_resource_key;
ALTER TABLE quotas ADD CONSTRAINT quotas_scope_resource_key
    UNIQUE NULLS NOT DISTINCT (account, usergroup, resource);
DROP POLICY own_quotas ON quotas;
CREATE POLICY own_quotas ON quotas FOR SELECT TO oarcloud_users
    USING ((account IS NULL AND usergroup IS NULL) OR account = current_user
           OR usergroup IN (SELECT usergroups_of(current_user)));
