-- Accounts known to oarcloud (F.u.0, F.a.0) and the image catalog (F.u.2).
CREATE TABLE accounts (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    uid           integer NOT NULL UNIQUE,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    ssh_pubkey    text NOT NULL,
    unix_created  boolean NOT NULL,
    created       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE images (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' AND name !~ '\.\.'),
    owner         text REFERENCES accounts(name) ON DELETE CASCADE,  -- NULL: the site
    visibility    text NOT NULL DEFAULT 'private'
                  CHECK (visibility IN ('private', 'public', 'shared')),
    format        text NOT NULL CHECK (format IN ('tar.zst')),
    size          bigint NOT NULL CHECK (size >= 0),       -- compressed bytes in the store
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    parent        text REFERENCES images(name),
    created       timestamptz NOT NULL DEFAULT now(),
    description   text NOT NULL DEFAULT ''
);

CREATE TABLE image_shares (
    image         text NOT NULL REFERENCES images(name) ON DELETE CASCADE,
    account       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    PRIMARY KEY (image, account)
);
