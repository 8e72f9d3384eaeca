"""Relay 127.0.0.1:PORT on this host to 127.0.0.1:INNER inside another network namespace.

    python3 scripts/loopback-forward.py PID PORT INNER

PID is a process in the target namespace (``/proc/PID/ns/net``). Each connection accepted on
the host's loopback is opened from inside that namespace (``setns``, which needs root), then
bytes are pumped both ways by two threads. ``scripts/milvus-local.sh`` runs the Milvus server
in a namespace holding only a loopback interface and reaches its proxy through this.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def main() -> None:
    pid, port, inner = (int(a) for a in sys.argv[1:4])
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)

    def connect_inside() -> socket.socket:
        # A socket belongs to the namespace it was made in, whatever the thread does later.
        if libc.setns(target, CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns")
        try:
            return socket.create_connection(("127.0.0.1", inner))
        finally:
            if libc.setns(home, CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), "setns back")

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    while True:
        client, _ = listener.accept()
        try:
            upstream = connect_inside()
        except OSError:
            client.close()
            continue
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=relay, args=(client, upstream), daemon=True).start()


def relay(client: socket.socket, upstream: socket.socket) -> None:
    """Both directions until both ends are done, then close the two sockets."""
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``sink``'s writing side; on an error, end both."""
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


if __name__ == "__main__":
    main()
