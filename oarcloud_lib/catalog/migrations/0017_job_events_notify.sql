-- `oarcloud logs -f` waits for a job's next event instead of polling: every
-- event wakes the listeners of oarcloud_job_events (the payload is the job
-- id; the event itself is read under row-level security as before).
CREATE FUNCTION job_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('oarcloud_job_events', NEW.job_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_notify();
