-- Instance disks (docs/storage.md): each instance's writes land on a
-- filesystem of its own size on its node (oarcloud_lib/node/disk.py).
-- NULL: an instance created before disks existed (its node's disk, unbounded).
ALTER TABLE instances ADD COLUMN disk bigint CHECK (disk > 0);
-- The bytes of the live instances' disks are a quota of their own.
ALTER TABLE quotas DROP CONSTRAINT quotas_resource_check,
    ADD CONSTRAINT quotas_resource_check CHECK (resource IN ('instances', 'cores', 'memory',
        'disk', 'images-bytes', 'networks', 'published-ports', 'vpn-clients', 'alarms',
        'targets'));
