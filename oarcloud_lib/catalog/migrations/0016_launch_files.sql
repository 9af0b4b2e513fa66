-- Files copied into every instance of a launch before it starts (oarcloud
-- launch --file SRC:DEST): stored through the broker as one bundle, named by
-- the job's cloud.files=ID type, written by each instance's node into its
-- root, as its root, before the instance starts (node/lifecycle.py).
CREATE TABLE launch_files (
    id          serial PRIMARY KEY,
    owner       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    files       jsonb NOT NULL,
    bytes       integer NOT NULL CHECK (bytes BETWEEN 0 AND 4194304),
    created     timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON launch_files TO oarcloud_users;
ALTER TABLE launch_files ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_launch_files ON launch_files FOR SELECT TO oarcloud_users
    USING (owner = current_user);
ALTER TABLE instances ADD COLUMN files integer REFERENCES launch_files(id) ON DELETE SET NULL;
