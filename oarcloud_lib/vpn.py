"""VPN access to a private network (F.u.8): one OpenVPN endpoint per network.

(In progress: the catalog side and the node's endpoints come next.)
"""


def endpoints(conn, node):
    """The VPN endpoints this node serves."""
    rows = conn.execute("SELECT v.network, v.udp_port, n.vni FROM net_vpns v"
                        " JOIN networks n ON n.id = v.network WHERE v.node = %s", (node,))
    return [dict(zip(("network", "udp_port", "vni"), r)) for r in rows]


def ensure_endpoints(endpoints, runner=None):
    """Start the endpoints' OpenVPN servers, stop the others."""
    return None
