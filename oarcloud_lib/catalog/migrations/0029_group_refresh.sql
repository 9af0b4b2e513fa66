-- Scaling groups (docs/groups.md): a new image for a group replaces its
-- members one at a time; a scale-in may remove those on an older image
-- first; protected members are kept out of scale-in and image replacement.
ALTER TABLE scaling_groups DROP CONSTRAINT scaling_groups_deletion_check;
ALTER TABLE scaling_groups ADD CONSTRAINT scaling_groups_deletion_check
    CHECK (deletion IN ('oldest', 'newest', 'old-image'));
ALTER TABLE group_members ADD COLUMN protected boolean NOT NULL DEFAULT false;
