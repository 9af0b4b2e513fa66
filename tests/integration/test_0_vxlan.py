"""VXLAN injection into another tenant's network (docs/security.md, "Tunnels
between nodes"), with the helpers of test_isolation.

Its control (a well-formed packet sent by root on the peer node's own
socket, which must arrive) was lost now and then in sessions 9 and 10: the
peer's kernel had learnt the node's address with the MAC of its underlay
interface (which answered ARP too, beside br-phy), and the userspace
datapath takes for a tunnel only what is sent to br-phy's MAC.  `setup node`
now sets arp_ignore=1 on the underlay interface (docs/design.md, "Node").
"""
from conftest import node_exec, run
from test_instances import launch
from test_isolation import VXLAN_SEND, delivered, domain_of, nic_of


def test_vxlan_cannot_be_injected_into_another_tenants_network(make_user):
    """alice's network spans both nodes.  bob, with a shell on node-1, and a
    machine on the underlay that is no node send VXLAN into it: nothing arrives.
    Root on node-1 (the node's own tunnel end) gets through, but only with the
    identity of alice's instance on node-1, never a forged one."""
    alice, bob = make_user(), make_user()
    rows = launch(alice, "--name", "v", "--count", "2", "--nodes", "2")
    src, dst = (dict(nic_of(domain_of(r)), domain=domain_of(r)) for r in rows)
    assert src["node"] != dst["node"]
    peer = run(["getent", "ahostsv4", dst["node"]], check=True).stdout.split()[0]

    def sender(who, src_ip=src["ip"], where=src["node"]):
        def send(ident):
            argv = ["python3", "-I", "-c", VXLAN_SEND, str(dst["vni"]), dst["mac"], src["mac"],
                    src_ip, dst["ip"], peer, ident]
            if where is None:  # the lab's host: on the underlay, not a node
                run(argv, check=True)
            elif who == "root":
                node_exec(where, *argv, check=True)
            else:  # the node refuses to send it (EPERM): fine, so long as nothing arrives
                node_exec(where, "runuser", "-u", who, "--", *argv)
        return send
    assert delivered(dst, sender("root"))                       # the packet is well formed
    assert not delivered(dst, sender(bob))                      # a job shell on node-1
    assert not delivered(dst, sender("root", where=None))       # the underlay, not a node
    assert not delivered(dst, sender("root", src_ip="198.18.9.9"))  # a forged identity
