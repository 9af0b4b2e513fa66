"""Relay stdin/stdout to a TCP port: `python -m oarcloud_lib.node.relay HOST PORT`.

What an ssh ProxyCommand needs (like `nc HOST PORT`), with nothing but Python:
the node runs it inside an instance's network namespace to reach its sshd.
"""
import os
import socket
import sys
import threading


def relay(host, port):
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.settimeout(None)

    def upstream():
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    threading.Thread(target=upstream, daemon=True).start()
    while True:
        data = sock.recv(65536)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
    return 0


if __name__ == "__main__":
    try:
        sys.exit(relay(sys.argv[1], sys.argv[2]))
    except OSError as e:
        print("oarcloud relay: %s" % e, file=sys.stderr)
        sys.exit(1)
