-- Private networks (F.u.8): per-user networks with a VXLAN segment id, the
-- addresses allocated in them, their security-group rules and published ports.

CREATE TABLE networks (
    id          serial PRIMARY KEY,
    owner       text NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    cidr        cidr NOT NULL CHECK (family(cidr) = 4 AND masklen(cidr) BETWEEN 16 AND 29),
    gateway     inet NOT NULL CHECK (gateway << cidr),
    vni         integer NOT NULL UNIQUE CHECK (vni BETWEEN 4096 AND 16777215),
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, name)
);

-- An address in a network: an instance's NIC or a VPN client.  A row lives
-- from allocation to teardown (released then), so an address is never given
-- twice while in use.  `net delete` refuses a network an instance uses; an
-- account's deletion takes its networks and their addresses with it.
CREATE TABLE nics (
    id          serial PRIMARY KEY,
    network     integer NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('instance', 'vpn')),
    domain      text CHECK (domain ~ '^oc[0-9]{1,9}-[0-9]{1,3}$'),
    idx         integer NOT NULL DEFAULT 0 CHECK (idx BETWEEN 0 AND 7),
    client      text CHECK (client ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    fingerprint text,
    ip          inet NOT NULL,
    mac         text NOT NULL CHECK (mac ~ '^0a(:[0-9a-f]{2}){5}$'),
    port        text NOT NULL CHECK (port ~ '^[a-z0-9-]{1,15}$'),
    node        text,
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (network, ip),
    UNIQUE (network, mac),
    CHECK ((kind = 'instance') = (domain IS NOT NULL))
);
CREATE UNIQUE INDEX nics_domain_idx ON nics (domain, idx) WHERE domain IS NOT NULL;
CREATE UNIQUE INDEX nics_vpn_client ON nics (network, client) WHERE kind = 'vpn';

-- Security-group rules, stateful, one set per network.
CREATE TABLE net_rules (
    id          serial PRIMARY KEY,
    network     integer NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    direction   text NOT NULL CHECK (direction IN ('ingress', 'egress')),
    proto       text NOT NULL CHECK (proto IN ('tcp', 'udp', 'icmp', 'any')),
    port_low    integer CHECK (port_low BETWEEN 1 AND 65535),
    port_high   integer CHECK (port_high BETWEEN port_low AND 65535),
    remote      cidr,
    created     timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (network, direction, proto, port_low, port_high, remote)
);

-- A port of an instance published on its node's underlay address (DNAT).
CREATE TABLE exposures (
    id          serial PRIMARY KEY,
    nic         integer NOT NULL REFERENCES nics(id) ON DELETE CASCADE,
    proto       text NOT NULL DEFAULT 'tcp' CHECK (proto IN ('tcp', 'udp')),
    port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    node        text NOT NULL,
    node_port   integer NOT NULL CHECK (node_port BETWEEN 30000 AND 32767),
    UNIQUE (node, proto, node_port),
    UNIQUE (nic, proto, port)
);

-- A network's VPN endpoint (one OpenVPN server on one node hosting it), with
-- its own certificate authority: clients are certificates it signed.
CREATE TABLE net_vpns (
    network     integer PRIMARY KEY REFERENCES networks(id) ON DELETE CASCADE,
    node        text NOT NULL,
    udp_port    integer NOT NULL CHECK (udp_port BETWEEN 1024 AND 65535),
    ca_cert     text NOT NULL,
    ca_key      text NOT NULL,
    server_cert text NOT NULL,
    server_key  text NOT NULL,
    UNIQUE (node, udp_port)
);

-- Two users' networks may share a CIDR: instance addresses are unique per
-- network (nics), no longer across the site.
DROP INDEX instances_live_ip;

GRANT SELECT ON networks, nics, net_rules, exposures TO oarcloud_users;
ALTER TABLE networks ENABLE ROW LEVEL SECURITY;
ALTER TABLE nics ENABLE ROW LEVEL SECURITY;
ALTER TABLE net_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE exposures ENABLE ROW LEVEL SECURITY;
CREATE FUNCTION network_owner(network_id integer) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT owner FROM networks WHERE id = network_id $$;
CREATE FUNCTION nic_owner(nic_id integer) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT n.owner FROM nics c JOIN networks n ON n.id = c.network WHERE c.id = nic_id $$;
CREATE POLICY own_networks ON networks FOR SELECT TO oarcloud_users USING (owner = current_user);
CREATE POLICY own_nics ON nics FOR SELECT TO oarcloud_users
    USING (network_owner(network) = current_user);
CREATE POLICY own_rules ON net_rules FOR SELECT TO oarcloud_users
    USING (network_owner(network) = current_user);
CREATE POLICY own_exposures ON exposures FOR SELECT TO oarcloud_users
    USING (nic_owner(nic) = current_user);
