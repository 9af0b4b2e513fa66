-- Allocations (oarcloud alloc create): a cloud job of OAR's that holds cores
-- and has no instance of its own; `oarcloud launch --in NAME` places
-- instances in it at once, without OAR (service/allocations.py).  The row
-- is made by the job's prologue, ended by its epilogue; its instances are
-- the instances rows of its job.
CREATE TABLE allocations (
    job_id      integer PRIMARY KEY,
    name        text NOT NULL,
    owner       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    state       text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'ended')),
    created     timestamptz NOT NULL DEFAULT now(),
    ended       timestamptz
);
CREATE UNIQUE INDEX allocations_live_name ON allocations (owner, name) WHERE state = 'running';
GRANT SELECT ON allocations TO oarcloud_users;
ALTER TABLE allocations ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_allocations ON allocations FOR SELECT TO oarcloud_users
    USING (owner = current_user);
-- A user reads the cores of their own allocations' jobs.
GRANT SELECT ON job_nodes TO oarcloud_users;
ALTER TABLE job_nodes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_job_nodes ON job_nodes FOR SELECT TO oarcloud_users
    USING (EXISTS (SELECT 1 FROM allocations a WHERE a.job_id = job_nodes.job_id
                   AND a.owner = current_user));
