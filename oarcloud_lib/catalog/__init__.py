"""The catalog: oarcloud's PostgreSQL database (db, migrations/) and the rules of
what it holds: accounts, images, instances, networks, alarms, job types, job events.
Runs wherever the catalog is read: the server, the broker, the node agent.
"""
