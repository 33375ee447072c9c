"""A hostile HTTP peer on 127.0.0.1 that answers one byte at a time, for the total-deadline tests.

Every byte comes well within any read timeout, so only a wall-clock deadline
on the whole request ends it. It records when each connection was opened and
when the hub gave up on it.
"""

import contextlib
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Connection:
    opened: float
    closed: float | None = None
    bytes_sent: int = 0


class DrippingServer:
    """Answers every request by dripping `answer` one byte every `interval` seconds.

    `headers_first=True` sends the status line and headers at once and drips
    only the body (no Content-Length, so a cut connection looks like the end of
    the body); otherwise the status line itself is dripped. `raw=True` reads
    nothing and drips `body` alone (a TLS handshake that never ends, say).
    """

    def __init__(
        self, *, interval: float = 0.25, body: bytes = b"x" * 400, headers_first: bool = False, raw: bool = False
    ) -> None:
        self.interval = interval
        self.raw = raw
        self.body = body
        self.headers_first = headers_first
        self.connections: list[Connection] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()

    def finished(self) -> list[Connection]:
        with self.lock:
            return [c for c in self.connections if c.closed is not None]

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = Connection(opened=time.monotonic())
            with self.lock:
                self.connections.append(record)
            threading.Thread(target=self._drip, args=(sock, record), daemon=True).start()

    def _drip(self, sock: socket.socket, record: Connection) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        with contextlib.closing(sock):
            sock.settimeout(1.0)
            with contextlib.suppress(OSError):
                if not self.raw:
                    self._read_request(sock)
                if self.raw:
                    answer = self.body
                elif self.headers_first:
                    sock.sendall(head)
                    answer = self.body
                else:
                    answer = head + self.body
                for byte in answer:
                    if self.stopped.wait(self.interval):
                        break
                    sock.sendall(bytes([byte]))
                    record.bytes_sent += 1
                    if self._peer_gone(sock):
                        break
            record.closed = time.monotonic()

    @staticmethod
    def _read_request(sock: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("no request")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk

    @staticmethod
    def _peer_gone(sock: socket.socket) -> bool:
        """Whether the hub closed or shut down its side (a readable socket that reads nothing)."""
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            sock.setblocking(True)
            sock.settimeout(1.0)
