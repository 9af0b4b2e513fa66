"""What the catalog says of nodes beyond OAR: their drains (server/nodeops.py
writes them)."""


def drained(conn):
    """The nodes an admin drained: no new instance or group member lands there."""
    return {r[0] for r in conn.execute("SELECT node FROM node_drains")}
