-- What the hooks said about a job (`oarcloud logs NAME`), and instances a user
-- stopped within their job's life.
CREATE TABLE job_events (
    id          bigserial PRIMARY KEY,
    job_id      integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    node        text NOT NULL,
    level       text NOT NULL,
    message     text NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);
GRANT SELECT ON job_events TO oarcloud_users;
ALTER TABLE job_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_job_events ON job_events FOR SELECT TO oarcloud_users
    USING (EXISTS (SELECT 1 FROM instances i WHERE i.job_id = job_events.job_id
                   AND i.owner = current_user));

ALTER TABLE instances DROP CONSTRAINT instances_state_check;
ALTER TABLE instances ADD CONSTRAINT instances_state_check
    CHECK (state IN ('allocated', 'creating', 'running', 'stopped', 'failed', 'deleted'));
