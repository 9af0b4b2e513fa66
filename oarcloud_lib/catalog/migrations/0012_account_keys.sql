-- More SSH keys per account (oarcloud key add|list|del): every new instance
-- gets the account's key and all of these in its authorized_keys.
CREATE TABLE account_keys (
    id          serial PRIMARY KEY,
    owner       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    key         text NOT NULL CHECK (length(key) <= 16384 AND key !~ '[\n\r]'),
    fingerprint text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, fingerprint)
);
GRANT SELECT ON account_keys TO oarcloud_users;
ALTER TABLE account_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_keys ON account_keys FOR SELECT TO oarcloud_users USING (owner = current_user);
