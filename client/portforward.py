"""Local port forwarding over an SSH connection (the Ray dashboard / Jobs API of the head).

Binds a free port on 127.0.0.1 before it is handed out (Fabric's ``forward_local`` binds in
a thread after returning), and carries each accepted connection over its own direct-tcpip
channel; one refused connection closes only itself.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable

import paramiko

from .remote_common import CHUNK
from .remote_sshconn import CHANNEL_ERRORS

_log = logging.getLogger(__name__)


def _splice(sock: socket.socket, chan: paramiko.Channel, stop: threading.Event) -> None:
    """Copy bytes both ways between a local socket and a channel until either side ends."""
    try:
        sock_open = True
        while not stop.is_set():
            ready, _, _ = select.select([chan, sock] if sock_open else [chan], [], [], 0.5)
            if chan in ready:
                data = chan.recv(CHUNK)
                if not data:
                    break  # the remote side is done, or the connection dropped
                sock.sendall(data)
            if sock in ready:
                data = sock.recv(CHUNK)
                if data:
                    chan.sendall(data)
                else:
                    sock_open = False
                    chan.shutdown_write()
    except CHANNEL_ERRORS:
        pass
    finally:
        chan.close()
        sock.close()


class PortForward:
    """Listens on 127.0.0.1 (a free port) and carries each accepted connection to ``target``
    over a direct-tcpip channel; a connection that arrives after a drop reconnects first."""

    def __init__(
        self,
        *,
        open_channel: Callable[[tuple[str, int], tuple[str, int]], paramiko.Channel],
        name: str,
        target: tuple[str, int],
    ) -> None:
        self._open_channel = open_channel
        self._name = name
        self._target = target
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._accepter = threading.Thread(
            target=self._accept_loop, name=f"tether-forward-{self.port}", daemon=True
        )
        self._accepter.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._carry, args=(sock, peer), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _carry(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        try:
            chan = self._open_channel(self._target, peer)
        except Exception as exc:  # a thread: log it; the local client sees EOF
            _log.info("forward to %s:%s on %s failed: %s", *self._target, self._name, exc)
            sock.close()
            return
        _splice(sock, chan, self._stop)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accepter.join(timeout=2)
        for thread in self._threads:
            thread.join(timeout=2)
