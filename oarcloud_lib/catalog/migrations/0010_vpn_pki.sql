-- VPN endpoints (docs/security.md, "VPN endpoints"; oarcloud_lib/server/vpnca.py).
-- The CA's key leaves the catalog for a root-only file of the server (setup
-- server moves the keys of existing endpoints, then the column stays empty);
-- each endpoint gets a tls-crypt key and a revocation list, each client its
-- certificate's serial and end.
ALTER TABLE net_vpns ALTER COLUMN ca_key DROP NOT NULL,
    ADD COLUMN tls_crypt text,
    ADD COLUMN crl text,
    ADD COLUMN ca_expires timestamptz,
    ADD COLUMN server_expires timestamptz;
ALTER TABLE nics ADD COLUMN cert_serial text CHECK (cert_serial ~ '^[0-9a-f]{1,40}$'),
    ADD COLUMN cert_expires timestamptz;

-- Revoked clients.  serial NULL: a client certified before serials were kept
-- (its name is never given again in that network: its old file still exists).
CREATE TABLE vpn_revoked (
    id          serial PRIMARY KEY,
    network     integer NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    client      text NOT NULL,
    serial      text CHECK (serial ~ '^[0-9a-f]{1,40}$'),
    revoked     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (network, serial)
);

-- Users see their own endpoints' public side (never the keys) and revocations.
GRANT SELECT (network, node, udp_port, ca_expires, server_expires) ON net_vpns TO oarcloud_users;
ALTER TABLE net_vpns ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_vpns ON net_vpns FOR SELECT TO oarcloud_users
    USING (network_owner(network) = current_user);
GRANT SELECT ON vpn_revoked TO oarcloud_users;
ALTER TABLE vpn_revoked ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_vpn_revoked ON vpn_revoked FOR SELECT TO oarcloud_users
    USING (network_owner(network) = current_user);
