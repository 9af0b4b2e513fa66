-- Metrics, alarms and notifications (F.u.4, F.u.5, F.a.5, F.a.6): what the
-- monitor service measured, the rules watching it and what it delivered.

-- Measured values.  step 0: raw samples (one per monitor cycle); 60 and 900:
-- means over that many seconds, rolled up from the finer ones.  subject is a
-- node name or an instance's domain (owner set then: its owner reads them).
CREATE TABLE samples (
    kind        text NOT NULL CHECK (kind IN ('node', 'instance')),
    subject     text NOT NULL,
    owner       text REFERENCES accounts(name) ON DELETE CASCADE,
    metric      text NOT NULL CHECK (metric ~ '^[a-z_]{1,20}$'),
    step        integer NOT NULL CHECK (step IN (0, 60, 900)),
    t           timestamptz NOT NULL,
    value       double precision NOT NULL,
    PRIMARY KEY (kind, subject, metric, step, t)
);
CREATE INDEX samples_step_t ON samples (step, t);

-- Threshold alarms (OpenStack Aodh's semantics).  A user's alarm watches one
-- of their instances by name; an admin's (owner NULL) watches a node.
CREATE TABLE alarms (
    id          serial PRIMARY KEY,
    owner       text REFERENCES accounts(name) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    kind        text NOT NULL CHECK (kind IN ('node', 'instance')),
    subject     text NOT NULL,
    metric      text NOT NULL CHECK (metric ~ '^[a-z_]{1,20}$'),
    op          text NOT NULL CHECK (op IN ('gt', 'ge', 'lt', 'le')),
    threshold   double precision NOT NULL,
    period      integer NOT NULL CHECK (period > 0),
    periods     integer NOT NULL CHECK (periods BETWEEN 1 AND 100),
    repeat      boolean NOT NULL DEFAULT false,
    notify      text[] NOT NULL DEFAULT '{}',
    state       text NOT NULL DEFAULT 'insufficient data'
                CHECK (state IN ('ok', 'alarm', 'insufficient data')),
    state_since timestamptz NOT NULL DEFAULT now(),
    last_value  double precision,
    evaluated   timestamptz,
    created     timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'instance') = (owner IS NOT NULL))
);
CREATE UNIQUE INDEX alarms_name ON alarms (coalesce(owner, ''), name);

CREATE TABLE alarm_history (
    id          bigserial PRIMARY KEY,
    alarm       integer NOT NULL REFERENCES alarms(id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    old_state   text NOT NULL,
    new_state   text NOT NULL,
    value       double precision
);
CREATE INDEX alarm_history_alarm ON alarm_history (alarm, id);

-- Where notifications go: apprise URLs of a user, or of the admins (owner NULL).
CREATE TABLE notify_targets (
    id          serial PRIMARY KEY,
    owner       text REFERENCES accounts(name) ON DELETE CASCADE,
    url         text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (owner, url)
);

-- The delivery queue and its log: one row per (message, URL), tried by the
-- monitor until sent or given up.
CREATE TABLE notifications (
    id          bigserial PRIMARY KEY,
    owner       text REFERENCES accounts(name) ON DELETE CASCADE,
    url         text NOT NULL,
    event       text NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL,
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    next_try    timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    created     timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent        timestamptz
);
CREATE INDEX notifications_due ON notifications (next_try) WHERE state = 'pending';
CREATE INDEX notifications_owner ON notifications (owner, id);

-- What the monitor already told: the state an instance was last notified in,
-- whether its walltime warning went out, and saves notified.
ALTER TABLE instances ADD COLUMN notified text;
ALTER TABLE instances ADD COLUMN walltime_warned boolean NOT NULL DEFAULT false;
ALTER TABLE image_saves ADD COLUMN notified boolean NOT NULL DEFAULT false;
-- Saves already finished before this migration were never going to be told.
UPDATE image_saves SET notified = true WHERE state IN ('done', 'failed');
UPDATE instances SET notified = state WHERE state IN ('running', 'failed', 'deleted');

-- The last OAR state the monitor saw of each node (transitions notify admins).
CREATE TABLE node_states (
    node        text PRIMARY KEY,
    state       text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT ON samples, alarms, alarm_history, notify_targets, notifications TO oarcloud_users;
ALTER TABLE samples ENABLE ROW LEVEL SECURITY;
ALTER TABLE alarms ENABLE ROW LEVEL SECURITY;
ALTER TABLE alarm_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE notify_targets ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
CREATE FUNCTION alarm_owner(alarm_id integer) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT owner FROM alarms WHERE id = alarm_id $$;
CREATE POLICY own_samples ON samples FOR SELECT TO oarcloud_users USING (owner = current_user);
CREATE POLICY own_alarms ON alarms FOR SELECT TO oarcloud_users USING (owner = current_user);
CREATE POLICY own_alarm_history ON alarm_history FOR SELECT TO oarcloud_users
    USING (alarm_owner(alarm) = current_user);
CREATE POLICY own_targets ON notify_targets FOR SELECT TO oarcloud_users
    USING (owner = current_user);
CREATE POLICY own_notifications ON notifications FOR SELECT TO oarcloud_users
    USING (owner = current_user);
