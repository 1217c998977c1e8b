"""Where the load generator connects: a gRPC target parsed, resolved and dialled (every resolved
address in turn)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """Where to connect: ``host:port``, ``[v6]:port``, ``dns:///host:port``, ``unix:/path``.

    ``addresses`` holds every address the name resolves to, tried in order (``localhost`` may
    resolve to ::1 first while the server listens on 127.0.0.1 only).
    """

    addresses: tuple[tuple[int, Any], ...]  # (address family, socket address)
    authority: str

    @classmethod
    def parse(cls, target: str) -> Target:
        text = target.strip()
        if text.startswith("unix:"):
            path = text[len("unix:"):]
            path = path[2:] if path.startswith("//") else path
            return cls(((socket.AF_UNIX, path),), "localhost")
        for scheme in ("dns:///", "ipv4:", "ipv6:"):
            if text.startswith(scheme):
                text = text[len(scheme):]
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"gRPC target {target!r} is not host:port (e.g. 127.0.0.1:8500)")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"gRPC target {target!r}: {host} does not resolve ({exc})") from None
        return cls(tuple((family, sockaddr) for family, _, _, _, sockaddr in infos), text)

    def dial(self, timeout_s: float, failures: list[str] | None = None) -> socket.socket:
        """A connected socket to the first address that accepts; OSError naming each failure.

        ``failures``, when given, receives "address: error" for each address that did not
        accept, in the order tried.
        """
        failures = [] if failures is None else failures
        for family, address in self.addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout_s)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                failures.append(f"{address}: {exc}")
                continue
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise OSError("; ".join(failures) or "no address")
