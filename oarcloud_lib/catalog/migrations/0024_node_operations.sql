-- Maintenance windows (oarcloud-admin node maintenance, docs/nodes.md): an
-- advance reservation of the whole host in OAR, made as the site's
-- maintenance account, which OAR's scheduler honours like any reservation.
CREATE TABLE node_maintenance (
    job_id      integer PRIMARY KEY,
    node        text NOT NULL CHECK (node ~ '^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$'),
    starts      timestamptz NOT NULL,
    ends        timestamptz NOT NULL CHECK (ends > starts),
    created     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX node_maintenance_node ON node_maintenance (node, starts);

-- Rolling updates (oarcloud-admin node update, server/updates.py): one run
-- at a time, a resumable state per node, and the capacity in service as it
-- went (cores of nodes Alive and not drained).
CREATE TABLE update_runs (
    id              serial PRIMARY KEY,
    command         text NOT NULL CHECK (length(command) BETWEEN 1 AND 65536),
    max_unavailable integer NOT NULL CHECK (max_unavailable >= 1),
    min_capacity    integer NOT NULL CHECK (min_capacity BETWEEN 0 AND 100),
    max_failures    integer NOT NULL CHECK (max_failures >= 1),
    failures_before integer NOT NULL DEFAULT 0,
    drain_deadline  integer CHECK (drain_deadline > 0),
    state           text NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'stopped', 'done', 'cancelled')),
    reason          text,
    created         timestamptz NOT NULL DEFAULT now(),
    updated         timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE update_nodes (
    run_id          integer NOT NULL REFERENCES update_runs(id) ON DELETE CASCADE,
    node            text NOT NULL,
    position        integer NOT NULL,
    step            text NOT NULL DEFAULT 'queued' CHECK (step IN
                    ('queued', 'draining', 'waiting', 'updating', 'checking', 'done', 'failed')),
    was_drained     boolean NOT NULL DEFAULT false,
    error           text,
    started         timestamptz,
    finished        timestamptz,
    PRIMARY KEY (run_id, node)
);
CREATE TABLE update_capacity (
    run_id          integer NOT NULL REFERENCES update_runs(id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    in_service      integer NOT NULL,
    total           integer NOT NULL,
    out_of_service  text[] NOT NULL
);
