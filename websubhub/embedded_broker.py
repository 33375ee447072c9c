"""The embedded broker: kombu's filesystem transport, taking messages without rescanning the folder each time.

kombu's own channel (kombu/transport/filesystem.py) lists and sorts the whole
message folder for every message it takes, and for every empty queue it polls,
then moves the file to the system's temporary folder (a copy when that is another
file system). With a backlog of N messages a take costs O(N), so a fan-out of a
few thousand deliveries ran at tens per second.

This channel keeps the same files, names and folders (so processes of either
kind share one broker, and messages written by an earlier version are read), and
changes how they are taken:

- one listing is shared by every queue of the channel; a queue whose share ran
  out lists the folder again (at most every LIST_INTERVAL seconds while it finds
  nothing, and less often while listing is slow: see below);
- a listing looks only at the names it has not handed out yet. The channel polls
  every queue in turn, and each empty queue asked for a listing: with 5,000
  deliveries queued, parsing and sorting every name again each time was 40 % of
  the embedded worker's CPU (bench/RESULTS.md). The folder's listing itself is one
  system call; the queues wait at least LIST_COST_FACTOR times what the last
  listing took before the next, so listing stays a small share of the CPU however
  long the backlog;
- a message is claimed by an atomic rename into the processed folder on the same
  file system; another process that renamed it first simply wins;
- a message is written whole before it appears: kombu creates the file under its
  final name and then writes into it, so a reader listing the folder in between
  claimed an empty file, and the JSON error that followed stopped the worker
  ("Unrecoverable error", seen in the latency benchmark). Here it is written under
  a name no reader takes (`.<name>.part`) and renamed to its `.msg` name;
- a claimed file that does not read as a message (one a writer of kombu's own
  channel is still filling) is read again for up to UNREADABLE_GRACE seconds, then
  set aside in the processed folder as `<name>.unreadable` with an error logged,
  never raised into the worker: the hub's sweep sends again whatever it carried
  (README, Delivery guarantees).

websubhub/celery.py points kombu's `filesystem` alias here, so the broker URL
stays `filesystem://`.
"""

import contextlib
import logging
import os
import time
import uuid
from collections import defaultdict, deque
from typing import Any

from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from websubhub.envelope_capture import EnvelopeCapture

logger = logging.getLogger(__name__)

# While a queue finds nothing, the folder is listed again at most this often (seconds),
LIST_INTERVAL = 0.02
# and not sooner than this many times what the last listing took.
LIST_COST_FACTOR = 20
# How long a claimed file that does not read as a message is read again before it is set aside (seconds).
UNREADABLE_GRACE = 2.0
UNREADABLE_RETRY = 0.01


def _age(name: str) -> tuple[int, str]:
    """A message file's place in line: the millisecond its name starts with, as a number (as text, 999_… would
    come after 1000_…), then the name."""
    stamp = name.partition("_")[0]
    return (int(stamp) if stamp.isdigit() else -1, name)


class Channel(EnvelopeCapture, filesystem.Channel):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: dict[str, deque[str]] = defaultdict(deque)
        # The names handed out to _waiting and not taken yet (by this channel, or seen gone from the folder).
        self._handed_out: set[str] = set()
        self._listed_at = 0.0
        self._list_seconds = 0.0
        self._claims_ready = False

    def _list(self) -> None:
        """Hand the folder's new messages out to their queues, oldest first (names start with a millisecond clock)."""
        started = time.monotonic()
        present = set(os.listdir(self.data_folder_in))
        for name in sorted(present - self._handed_out, key=_age):
            queue = name.partition(".")[2]
            if queue.endswith(".msg"):
                self._waiting[queue[: -len(".msg")]].append(name)
                self._handed_out.add(name)
        # Names another process took stay in _waiting (a failed rename drops them) but not here.
        self._handed_out &= present
        self._listed_at = time.monotonic()
        self._list_seconds = self._listed_at - started

    def _get(self, queue: str) -> dict:
        """The oldest message of `queue`, claimed by renaming it into the processed folder."""
        waiting = self._waiting[queue]
        if not waiting and time.monotonic() - self._listed_at >= max(
            LIST_INTERVAL, LIST_COST_FACTOR * self._list_seconds
        ):
            self._list()
        claimed_folder = self._claims_folder()
        while waiting:
            name = waiting.popleft()
            self._handed_out.discard(name)
            claimed = os.path.join(claimed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except OSError:
                continue  # taken by another process, or gone
            message = self._read(claimed)
            if message is not None:
                return message
        raise Empty()

    def _read(self, claimed: str) -> dict | None:
        """The message in a claimed file (then removed, unless kept); None when it never read as one."""
        deadline = time.monotonic() + UNREADABLE_GRACE
        while True:
            try:
                with open(claimed, "rb") as file:
                    payload = file.read()
            except OSError as exc:
                raise filesystem.ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            try:
                message = loads(bytes_to_str(payload))
            except ValueError:
                message = None
            if isinstance(message, dict):
                if not self.store_processed:
                    with contextlib.suppress(OSError):
                        os.remove(claimed)
                return message
            if time.monotonic() >= deadline:
                break
            time.sleep(UNREADABLE_RETRY)
        aside = f"{claimed}.unreadable"
        with contextlib.suppress(OSError):
            os.rename(claimed, aside)
        logger.error(
            "broker message file %s did not read as a message (%s bytes) and was set aside as %s; "
            "the sweep sends again what it carried",
            os.path.basename(claimed),
            len(payload),
            aside,
        )
        return None

    def envelopes_push(self, queue: str, envelopes: list[str]) -> None:
        """Write already encoded messages to queue, each in its own file as `_put` writes one."""
        for envelope in envelopes:
            self._write(queue, envelope)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        if self._hub_capture is not None:
            self._hub_capture.append((queue, payload))
            return
        self._write(queue, dumps(payload))

    def _write(self, queue: str, text: str) -> None:
        """kombu's message file (same name, same content), written whole under a name no reader takes, then
        renamed to its `.msg` name."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name[: -len('.msg')]}.part")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(text))
            os.rename(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc

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
