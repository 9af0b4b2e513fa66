-- Scaling groups (oarcloud group, service/groups.py): instances of one shape
-- kept between min_size and max_size, at desired_size, which a target on a
-- metric of theirs moves (target tracking).  Written by the broker for its
-- owner, reconciled by the monitor (root, with the owner's rights and quotas).
CREATE TABLE scaling_groups (
    id              serial PRIMARY KEY,
    owner           text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    name            text NOT NULL,
    image           text,
    cores           integer NOT NULL CHECK (cores > 0),
    memory          bigint,
    networks        text[] NOT NULL DEFAULT '{}',
    alloc           text,              -- an allocation's name, or one OAR job per member
    walltime        text NOT NULL,     -- of each member's own job
    min_size        integer NOT NULL CHECK (min_size >= 0),
    max_size        integer NOT NULL CHECK (max_size >= min_size),
    desired         integer NOT NULL CHECK (desired BETWEEN min_size AND max_size),
    target_metric   text,              -- target tracking: an instance metric
    target_value    double precision,
    period          integer NOT NULL CHECK (period > 0),        -- s the metric is averaged
    cooldown_out    integer NOT NULL CHECK (cooldown_out >= 0), -- s after a scale-out
    cooldown_in     integer NOT NULL CHECK (cooldown_in >= 0),  -- s after any scaling
    window_in       integer NOT NULL CHECK (window_in > 0),     -- scale-in stabilization
    deletion        text NOT NULL CHECK (deletion IN ('oldest', 'newest')),
    next_seq        integer NOT NULL DEFAULT 0,
    last_out        timestamptz,
    last_in         timestamptz,
    unreachable     text,              -- why desired is not reached (told once)
    created         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, name)
);
-- A member: an instance of the group, in its allocation (domain known at
-- once) or in a job of its own (domain oc<job>-0 once its prologue ran).
CREATE TABLE group_members (
    group_id        integer NOT NULL REFERENCES scaling_groups(id) ON DELETE CASCADE,
    name            text NOT NULL,
    job_id          integer NOT NULL,
    domain          text NOT NULL,
    added           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, name)
);
CREATE INDEX group_members_domain ON group_members (domain);
-- What the scaler did, newest last: `group show` prints it.
CREATE TABLE group_history (
    id              bigserial PRIMARY KEY,
    group_id        integer NOT NULL REFERENCES scaling_groups(id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    action          text NOT NULL,     -- scale-out, scale-in, replace, set, unreachable
    before          integer,
    after           integer,
    reason          text NOT NULL
);
CREATE INDEX group_history_group ON group_history (group_id, id);
GRANT SELECT ON scaling_groups, group_members, group_history TO oarcloud_users;
ALTER TABLE scaling_groups ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_groups ON scaling_groups FOR SELECT TO oarcloud_users
    USING (owner = current_user);
ALTER TABLE group_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_group_members ON group_members FOR SELECT TO oarcloud_users
    USING (EXISTS (SELECT 1 FROM scaling_groups g WHERE g.id = group_id
                   AND g.owner = current_user));
ALTER TABLE group_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_group_history ON group_history FOR SELECT TO oarcloud_users
    USING (EXISTS (SELECT 1 FROM scaling_groups g WHERE g.id = group_id
                   AND g.owner = current_user));
