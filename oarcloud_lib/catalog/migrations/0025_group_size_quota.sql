-- A quota on the size of each scaling group (its --max): `quota set
-- --group-size N` (docs/quotas.md).
ALTER TABLE quotas DROP CONSTRAINT quotas_resource_check,
    ADD CONSTRAINT quotas_resource_check CHECK (resource IN ('instances', 'cores', 'memory',
        'disk', 'images-bytes', 'volumes-bytes', 'networks', 'published-ports', 'vpn-clients',
        'alarms', 'targets', 'group-size'));
