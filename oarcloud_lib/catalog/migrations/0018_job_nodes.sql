-- The cores OAR gave each cloud job on each of its nodes (from the job's
-- nodefile, recorded by its prologue): what its instances there may hold
-- together, also after a live resize (oarcloud resize, service/resize.py).
CREATE TABLE job_nodes (
    job_id      integer NOT NULL,
    node        text NOT NULL,
    cores       integer NOT NULL CHECK (cores > 0),
    PRIMARY KEY (job_id, node)
);
