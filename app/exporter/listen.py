"""Where the exporter listens: parsing ``--listen`` and binding, with one-line refusals."""

from __future__ import annotations

import errno

from prometheus_client.registry import CollectorRegistry


class ListenError(ValueError):
    """The listen address is malformed or cannot be bound; the message is one line for the user."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (loopback) → (host, port)."""
    text = text.strip()
    if text.isdigit():
        host, port_s = "127.0.0.1", text
    elif text.startswith("["):
        host, sep, port_s = text[1:].partition("]:")
        if not sep:
            raise ListenError(f"bad --listen {text!r}: expected [ADDRESS]:PORT")
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep:
            raise ListenError(f"bad --listen {text!r}: expected HOST:PORT")
        if not host:
            raise ListenError(
                f"bad --listen {text!r}: give a host (127.0.0.1:{port_s} for this machine only, "
                f"0.0.0.0:{port_s} for every interface)"
            )
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ListenError(f"bad --listen {text!r}: the port must be a number from 0 to 65535")
    return host, int(port_s)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve(registry: CollectorRegistry, host: str, port: int):
    """Bind and serve ``/metrics`` in a daemon thread; (server, thread, bound port).

    Raises ListenError with one line for a port in use, a privileged port, an unknown address.
    """
    import socket

    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: unknown address ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"cannot listen on {host}:{port}: the port is already in use "
                "(another exporter running?); pick another with --listen HOST:PORT"
            ) from None
        if exc.errno == errno.EACCES:
            raise ListenError(
                f"cannot listen on {host}:{port}: permission denied (ports below 1024 need privileges)"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(f"cannot listen on {host}:{port}: no such address on this machine") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return server, thread, server.server_address[1]
