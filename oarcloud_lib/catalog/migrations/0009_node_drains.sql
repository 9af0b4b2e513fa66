-- Drained nodes (F.a.1, docs/nodes.md): OAR schedules no new job on any of the
-- node's resources (its `drain` property); jobs still there at the deadline
-- are ended by the monitor.  Admins only: users hear of it by notification.
CREATE TABLE node_drains (
    node        text PRIMARY KEY CHECK (node ~ '^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$'),
    deadline    timestamptz,
    created     timestamptz NOT NULL DEFAULT now(),
    enforced    timestamptz
);
