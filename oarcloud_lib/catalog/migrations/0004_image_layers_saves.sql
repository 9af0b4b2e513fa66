-- Images (F.u.2, F.u.3): saved images are layers over their parent, users see
-- the images they may use, and saves handed over at a job's end are tracked.

-- depth 0: the file is a whole root filesystem; depth n > 0: the file is a
-- layer over parent (whose depth is n - 1).  A flattened save keeps its
-- parent for the record only (depth 0), so deleting that parent forgets it.
ALTER TABLE images ADD COLUMN depth integer NOT NULL DEFAULT 0 CHECK (depth BETWEEN 0 AND 16);
ALTER TABLE images ADD COLUMN unpacked bigint NOT NULL DEFAULT 0 CHECK (unpacked >= 0);
ALTER TABLE images DROP CONSTRAINT images_parent_fkey;
ALTER TABLE images ADD CONSTRAINT images_parent_fkey
    FOREIGN KEY (parent) REFERENCES images(name) ON DELETE SET NULL;
ALTER TABLE images ADD CONSTRAINT images_layer_has_parent CHECK (depth = 0 OR parent IS NOT NULL);

-- Who owns an image, for the share policy below (as the table owner: no
-- recursion between the two tables' policies).
CREATE FUNCTION image_owner(image_name text) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT owner FROM images WHERE name = image_name $$;

ALTER TABLE images ENABLE ROW LEVEL SECURITY;
CREATE POLICY usable_images ON images FOR SELECT TO oarcloud_users
    USING (visibility = 'public' OR owner = current_user
           OR EXISTS (SELECT 1 FROM image_shares s WHERE s.image = images.name
                      AND s.account = current_user));
ALTER TABLE image_shares ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_shares ON image_shares FOR SELECT TO oarcloud_users
    USING (account = current_user OR image_owner(image) = current_user);

-- An instance's changes to save as a new image: asked at launch
-- (`--save-on-exit`, saved when the job ends) and carried out by the server's
-- saver once the node has kept the changes (state kept).
CREATE TABLE image_saves (
    id          serial PRIMARY KEY,
    domain      text NOT NULL CHECK (domain ~ '^oc[0-9]{1,9}-[0-9]{1,3}$'),
    job_id      integer NOT NULL,
    owner       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    image       text NOT NULL CHECK (image ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
                                     AND image !~ '\.\.'),
    flatten     boolean NOT NULL DEFAULT false,
    node        text,
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'kept', 'saving', 'done', 'failed')),
    error       text,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now()
);
-- One image name is asked by one save at a time.
CREATE UNIQUE INDEX image_saves_open_name ON image_saves (image)
    WHERE state IN ('pending', 'kept', 'saving');
GRANT SELECT ON image_saves TO oarcloud_users;
ALTER TABLE image_saves ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_saves ON image_saves FOR SELECT TO oarcloud_users USING (owner = current_user);
