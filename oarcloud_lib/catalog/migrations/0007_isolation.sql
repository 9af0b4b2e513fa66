-- Isolation (docs/security.md).
--
-- Row-level security helpers run as the catalog's owner (SECURITY DEFINER):
-- their search_path lists pg_temp last, so that a user's temporary table or
-- function can never shadow the real one, and users may not create temporary
-- objects in the catalog at all.  Only oarcloud_users (and the owner) may call
-- them.
ALTER FUNCTION image_owner(text) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION network_owner(integer) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION nic_owner(integer) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION alarm_owner(integer) SET search_path = pg_catalog, public, pg_temp;
REVOKE EXECUTE ON FUNCTION image_owner(text), network_owner(integer), nic_owner(integer),
    alarm_owner(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION image_owner(text), network_owner(integer), nic_owner(integer),
    alarm_owner(integer) TO oarcloud_users;
DO $$ BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END $$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Each account's uid range on the nodes (oarcloud_lib/idmap.py): slot N maps
-- the instances' 0..65535 to TENANT_BASE + N * 65536 ...  Never reused: a
-- deleted account's leftovers never belong to a new one.
CREATE SEQUENCE account_id_slot START 1;
ALTER TABLE accounts ADD COLUMN id_slot integer UNIQUE;
UPDATE accounts SET id_slot = nextval('account_id_slot') WHERE id_slot IS NULL;
ALTER TABLE accounts ALTER COLUMN id_slot SET DEFAULT nextval('account_id_slot'),
    ALTER COLUMN id_slot SET NOT NULL;
