"""What every test server in tests/support shares: a socketserver on 127.0.0.1, served by a daemon thread."""

import socketserver
import threading


class LoopbackServer:
    """Serves `self.server` on a thread of its own from `_serve()`; `port`, and `close()` to stop it."""

    server: socketserver.BaseServer

    def _serve(self, server: socketserver.BaseServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
