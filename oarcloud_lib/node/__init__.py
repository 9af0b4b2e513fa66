"""What runs on a node, as root: the node agent (agent), the instance driver,
instance roots (rootfs, imagecache, layer, idmap), limits, node networking
(netnode, netflows, vpn), probes, users' ways in (access, relay) and `setup node`.
"""
