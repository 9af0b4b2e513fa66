-- Load balancers (oarcloud lb, server/balancers.py): one HAProxy per balancer
-- on the OAR server, listening on listen_port of the server's address, in
-- front of the running members of one scaling group, each reached at the
-- port it publishes on its node (an exposure of `port`).
CREATE TABLE balancers (
    id              serial PRIMARY KEY,
    owner           text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    name            text NOT NULL,
    group_id        integer NOT NULL UNIQUE REFERENCES scaling_groups(id),
    port            integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    check_kind      text NOT NULL CHECK (check_kind IN ('http', 'tcp')),
    check_path      text,
    algorithm       text NOT NULL CHECK (algorithm IN ('roundrobin', 'leastconn')),
    listen_port     integer NOT NULL UNIQUE CHECK (listen_port BETWEEN 33000 AND 33999),
    created         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, name)
);
GRANT SELECT ON balancers TO oarcloud_users;
ALTER TABLE balancers ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_balancers ON balancers FOR SELECT TO oarcloud_users
    USING (owner = current_user);
-- A group's members may run a first-boot script (oarcloud group create --user-data).
ALTER TABLE scaling_groups ADD COLUMN user_data integer;
-- Balancers' metrics (request rate, 5xx rate, latency) beside nodes' and instances'.
ALTER TABLE samples DROP CONSTRAINT samples_kind_check;
ALTER TABLE samples ADD CONSTRAINT samples_kind_check CHECK (kind IN ('node', 'instance', 'lb'));
