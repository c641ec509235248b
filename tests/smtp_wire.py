"""A raw SMTP client for tests that must send bytes exactly as given, and TLS helpers."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from spoolgate.ingress.tls import write_self_signed
from tests.gateway_process import GatewayProcess

TIMEOUT = 10.0  # every socket read waits at most this long: the deadline of each poll


def insecure_context() -> ssl.SSLContext:
    """A client context that takes the test's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_gateway(folder: Path, **smtp: object) -> GatewayProcess:
    """A (not yet started) gateway in *folder* offering STARTTLS with a self-signed pair."""
    write_self_signed(folder / "cert.pem", folder / "key.pem", "mx.test.example")
    settings = {"tls_cert": str(folder / "cert.pem"), "tls_key": str(folder / "key.pem"), **smtp}
    return GatewayProcess(folder, f"sqlite:///{folder / 'spoolgate.db'}", smtp=settings)


class Wire:
    """A raw SMTP client: sends bytes exactly as given, reads whole (multi-line) replies."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT,
                                             source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """The next reply, its lines joined with newlines; EOFError once the server closed."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    def command(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        assert self._pending == b"", f"read ahead of the handshake: {self._pending!r}"
        self.sock = insecure_context().wrap_socket(self.sock, server_hostname="mx.test.example")

    def open_transaction(self, sender: bytes, recipient: bytes) -> None:
        """MAIL, RCPT and DATA in one packet; all three must succeed."""
        self.send(b"MAIL FROM:<" + sender + b">\r\nRCPT TO:<" + recipient + b">\r\nDATA\r\n")
        assert [self.reply() for _ in range(3)] == [
            "250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]

    def at_eof(self) -> bool:
        """True when the server closes the connection before sending anything more."""
        if self._pending:
            return False
        return self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()

    def _line(self) -> str:
        while b"\r\n" not in self._pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unread: {self._pending!r}")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\r\n")
        return line.decode("utf-8", "replace")
