-- The web service and HTTP API (docs/web.md).  Two more roles: an operator
-- (node operations, sees everything) and a viewer (sees everything, changes
-- nothing).  API tokens: the catalog keeps a token's SHA-256, never the token;
-- users reach theirs through the broker only (no grant to oarcloud_users).
ALTER TABLE accounts DROP CONSTRAINT IF EXISTS accounts_role_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_role_check
    CHECK (role IN ('user', 'admin', 'operator', 'viewer'));
CREATE TABLE api_tokens (
    id          serial PRIMARY KEY,
    account     text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    digest      text NOT NULL UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
    hint        text NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),
    last_used   timestamptz,
    UNIQUE (account, name)
);
