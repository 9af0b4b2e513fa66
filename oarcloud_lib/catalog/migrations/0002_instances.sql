-- Instances (F.u.1): one row per instance of a cloud job, from allocation to teardown.
CREATE TABLE instances (
    domain      text PRIMARY KEY CHECK (domain ~ '^oc[0-9]{1,9}-[0-9]{1,3}$'),
    job_id      integer NOT NULL,
    idx         integer NOT NULL CHECK (idx >= 0),
    name        text NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    owner       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    node        text NOT NULL,
    image       text NOT NULL,
    cores       integer NOT NULL CHECK (cores > 0),
    memory      bigint NOT NULL CHECK (memory > 0),
    ip          inet,
    mac         text,
    state       text NOT NULL DEFAULT 'allocated'
                CHECK (state IN ('allocated', 'creating', 'running', 'failed', 'deleted')),
    error       text,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, idx)
);
-- Live (not deleted, not failed) instances never share an address or, per owner, a name.
CREATE UNIQUE INDEX instances_live_ip ON instances (ip) WHERE state NOT IN ('deleted', 'failed');
CREATE UNIQUE INDEX instances_live_name ON instances (owner, name) WHERE state NOT IN ('deleted', 'failed');

-- Users read the catalog as themselves (peer authentication on the server's
-- socket): each sees only its own rows.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oarcloud_users') THEN
        CREATE ROLE oarcloud_users NOLOGIN;
    END IF;
END $$;
GRANT SELECT ON accounts, instances, images, image_shares TO oarcloud_users;
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE instances ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_account ON accounts FOR SELECT TO oarcloud_users USING (name = current_user);
CREATE POLICY own_instances ON instances FOR SELECT TO oarcloud_users USING (owner = current_user);
