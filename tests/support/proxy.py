"""A small TCP proxy on 127.0.0.1 in front of PostgreSQL that can pass, reset or black-hole.

Modelled on pg-boss's test/halfOpenProxy.ts. Upstream may be a TCP (host, port) or a Unix
socket path (the embedded server listens only on a socket). ``blackhole()`` keeps sockets
open but stops forwarding both ways (a half-open peer); ``reset()`` drops every connection;
``refuse()`` closes every new connection at once (a server that is down); ``heal()`` undoes
``blackhole()`` and ``refuse()``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from psycopg.conninfo import conninfo_to_dict


class Proxy:
    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self.upstream = upstream
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._refusing = threading.Event()
        self._closed = threading.Event()
        self.accepted = 0
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.upstream)
        else:
            sock = socket.create_connection(self.upstream)
        return sock

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._refusing.is_set():
                client.close()
                continue
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._closed.is_set():
                if not self._forwarding.is_set():
                    self._forwarding.wait(0.1)
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                for sock in readable:
                    if not self._forwarding.is_set():
                        break  # hold the bytes: a black-holed peer never answers
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket reset() closed meanwhile
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def blackhole(self) -> None:
        self._forwarding.clear()

    def refuse(self) -> None:
        """Drop every open connection and close each new one at once, until heal()."""
        self._refusing.set()
        self.reset()

    def heal(self) -> None:
        self._refusing.clear()
        self._forwarding.set()

    def reset(self) -> None:
        """Drop every open connection (RST-like); new ones are still accepted."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.close()

    def close(self) -> None:
        self._closed.set()
        self._forwarding.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self.reset()


def proxied(url: str) -> tuple[Proxy, str]:
    """A proxy in front of the server of `url`, and the same database's URL through it."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "127.0.0.1")
    port = int(params.get("port") or 5432)
    upstream: tuple[str, int] | str = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
    proxy = Proxy(upstream)
    user = params.get("user") or "postgres"
    secret = f":{params['password']}" if params.get("password") else ""
    return proxy, f"postgresql://{user}{secret}@127.0.0.1:{proxy.port}/{params['dbname']}"
