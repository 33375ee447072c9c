"""The progress bar the long-running commands (hub_replay, hub_retry_failed, hub_purge) draw on a terminal."""

from django.core.management.base import OutputWrapper

# Characters between the brackets.
BAR_WIDTH = 30


class ProgressBar:
    """Call it with (done, total) to redraw `[####......] done/total` on stderr, when stderr is a terminal;
    `end()` closes the line it drew."""

    def __init__(self, stderr: OutputWrapper, *, unit: str = "") -> None:
        self.stderr = stderr
        self.shown = stderr.isatty()
        self.suffix = f" {unit}" if unit else ""
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if self.shown:
            filled = BAR_WIDTH * done // max(total, 1)
            self.stderr.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}{self.suffix}", ending="")
            self.drawn = True

    def end(self) -> None:
        if self.drawn:
            self.stderr.write("")
