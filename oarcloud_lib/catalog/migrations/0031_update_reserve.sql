-- Rolling updates that reserve each node's earliest gap (docs/nodes.md):
-- instead of a drain, an advance reservation of the whole node (by the
-- oarmaint account) at the first time OAR can give it for `reserve`
-- seconds; jobs that end before it still start there meanwhile.
ALTER TABLE update_runs ADD COLUMN reserve integer CHECK (reserve BETWEEN 60 AND 86400);
ALTER TABLE update_nodes ADD COLUMN reservation integer;
ALTER TABLE update_nodes DROP CONSTRAINT update_nodes_step_check;
ALTER TABLE update_nodes ADD CONSTRAINT update_nodes_step_check CHECK (step IN
    ('queued', 'reserving', 'reserved', 'draining', 'waiting', 'updating', 'checking', 'done',
     'failed'));
