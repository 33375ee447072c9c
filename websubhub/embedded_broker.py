"""The embedded broker: kombu's filesystem transport, taking messages without rescanning the folder each time.

kombu's own channel (kombu/transport/filesystem.py) lists and sorts the whole
message folder for every message it takes, and for every empty queue it polls,
then moves the file to the system's temporary folder (a copy when that is another
file system). With a backlog of N messages a take costs O(N), so a fan-out of a
few thousand deliveries ran at tens per second.

This channel keeps the same files, names and folders (so processes of either
kind share one broker, and messages written by an earlier version are read), and
changes how they are taken:

- one listing, sorted once, is shared by every queue of the channel; a queue
  whose share ran out lists the folder again (at most every LIST_INTERVAL seconds
  while it finds nothing);
- a message is claimed by an atomic rename into the processed folder on the same
  file system; another process that renamed it first simply wins.

websubhub/celery.py points kombu's `filesystem` alias here, so the broker URL
stays `filesystem://`.
"""

import os
import time
from collections import defaultdict, deque

from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

# While a queue finds nothing, the folder is listed again at most this often (seconds).
LIST_INTERVAL = 0.02


class Channel(filesystem.Channel):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: dict[str, deque[str]] = defaultdict(deque)
        self._listed_at = 0.0
        self._claims_ready = False

    def _list(self) -> None:
        """Share one sorted listing of the folder out to the queues (file names start with a millisecond clock)."""
        self._waiting.clear()
        for name in sorted(os.listdir(self.data_folder_in)):
            queue = name.partition(".")[2]
            if queue.endswith(".msg"):
                self._waiting[queue[: -len(".msg")]].append(name)
        self._listed_at = time.monotonic()

    def _get(self, queue: str) -> dict:
        """The oldest message of `queue`, claimed by renaming it into the processed folder."""
        waiting = self._waiting[queue]
        if not waiting and time.monotonic() - self._listed_at >= LIST_INTERVAL:
            self._list()
            waiting = self._waiting[queue]
        claimed_folder = self._claims_folder()
        while waiting:
            name = waiting.popleft()
            claimed = os.path.join(claimed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except OSError:
                continue  # taken by another process, or gone
            try:
                with open(claimed, "rb") as file:
                    payload = file.read()
                if not self.store_processed:
                    os.remove(claimed)
            except OSError as exc:
                raise filesystem.ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise Empty()

    def _claims_folder(self) -> str:
        """Where a claimed message waits to be read: the processed folder (same file system as the messages)."""
        if not self._claims_ready:
            os.makedirs(self.processed_folder, exist_ok=True)
            self._claims_ready = True
        return self.processed_folder

    def _size(self, queue: str) -> int:
        wanted = f"{queue}.msg"
        return sum(1 for name in os.listdir(self.data_folder_in) if name.partition(".")[2] == wanted)


class Transport(filesystem.Transport):
    Channel = Channel
