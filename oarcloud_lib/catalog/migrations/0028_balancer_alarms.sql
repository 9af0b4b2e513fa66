-- Alarms on a user's load balancer (docs/monitoring.md): HAProxy's request
-- rate, 5xx rate, latency and members up, as the balancer's samples (kind
-- 'lb') hold them.  A user's alarm watches an instance or a balancer; an
-- admin's (owner NULL) a node.
ALTER TABLE alarms DROP CONSTRAINT alarms_kind_check;
ALTER TABLE alarms ADD CONSTRAINT alarms_kind_check CHECK (kind IN ('node', 'instance', 'lb'));
ALTER TABLE alarms DROP CONSTRAINT alarms_check;
ALTER TABLE alarms ADD CONSTRAINT alarms_owner_kind CHECK ((kind = 'node') = (owner IS NULL));
