-- Volumes (docs/storage.md): filesystems that outlive instances and follow
-- them to any node.  The backend holds the bytes (server/volumestore.py:
-- the site's shared filesystem); the catalog holds who owns a volume, who it
-- is shared with (read-only), and where it is attached.
CREATE TABLE volumes (
    id          serial PRIMARY KEY,
    owner       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    size        bigint NOT NULL CHECK (size > 0),
    backend     text NOT NULL DEFAULT 'sharedfs' CHECK (backend IN ('sharedfs')),
    origin      text,  -- what it was made from: 'image NAME', 'snapshot of NAME'
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, name)
);
CREATE TABLE volume_shares (
    volume      integer NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    owner       text NOT NULL,  -- the volume's (its policy may not read volumes)
    account     text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    PRIMARY KEY (volume, account)
);
-- Read-write in one instance at a time, read-only in many, never both.  A row
-- lives from the attach to the instance's detach or end (released by the
-- node's teardown, else by the server when the job ends).
CREATE TABLE volume_attachments (
    volume      integer NOT NULL REFERENCES volumes(id) ON DELETE RESTRICT,
    domain      text NOT NULL CHECK (domain ~ '^oc[0-9]{1,9}-[0-9]{1,3}$'),
    path        text NOT NULL CHECK (path ~ '^/[A-Za-z0-9._/-]{1,255}$'),
    readonly    boolean NOT NULL,
    state       text NOT NULL DEFAULT 'attaching' CHECK (state IN ('attaching', 'attached')),
    created     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (volume, domain),
    UNIQUE (domain, path)
);
CREATE UNIQUE INDEX volume_one_writer ON volume_attachments (volume) WHERE NOT readonly;
GRANT SELECT ON volumes, volume_shares, volume_attachments TO oarcloud_users;
ALTER TABLE volumes ENABLE ROW LEVEL SECURITY;
ALTER TABLE volume_shares ENABLE ROW LEVEL SECURITY;
ALTER TABLE volume_attachments ENABLE ROW LEVEL SECURITY;
-- A user sees their volumes and those shared with them (not who else has
-- them), and with whom theirs are shared.
CREATE POLICY own_volumes ON volumes FOR SELECT TO oarcloud_users USING (owner = current_user
    OR id IN (SELECT volume FROM volume_shares WHERE account = current_user));
CREATE POLICY own_volume_shares ON volume_shares FOR SELECT TO oarcloud_users
    USING (account = current_user OR owner = current_user);
CREATE POLICY own_volume_attachments ON volume_attachments FOR SELECT TO oarcloud_users
    USING (domain IN (SELECT domain FROM instances WHERE owner = current_user));
ALTER TABLE quotas DROP CONSTRAINT quotas_resource_check,
    ADD CONSTRAINT quotas_resource_check CHECK (resource IN ('instances', 'cores', 'memory',
        'disk', 'images-bytes', 'volumes-bytes', 'networks', 'published-ports', 'vpn-clients',
        'alarms', 'targets'));
