-- A member in an OAR job of its own whose walltime nears its end: OAR is
-- asked for this many more seconds first (NULL: never), at twice
-- replace_before from the end; replaced only if OAR does not grant it.
ALTER TABLE scaling_groups ADD COLUMN extend_by integer CHECK (extend_by BETWEEN 60 AND 604800);
