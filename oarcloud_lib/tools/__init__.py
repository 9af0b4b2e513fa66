"""Wrappers of the external tools oarcloud drives, one module per tool (OAR's
commands and oar.conf, OAR's ssh to nodes, Open vSwitch, iproute2/ethtool,
PostgreSQL's cluster tools): argv lists built in one place, outputs parsed there.
"""
