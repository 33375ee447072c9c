"""The hub's benchmark (issue 5): starts what it measures, prints a table, appends it to bench/RESULTS.md.

Run it through `bench/run` (sets up .venv). Everything it starts listens on
127.0.0.1 and is stopped on exit, Ctrl-C or error. It uses its own PostgreSQL
database (dropped and created at start), its own Redis DB number (flushed) and
its own HUB_VAR_DIR under bench/out/.

Scenarios (--scenarios, comma-separated; default all):
  ceiling    bare Celery task doing one pooled requests POST (bench/ceiling_app.py), CPU per POST
  e2e        S subscribers on one topic, M notifications through POST /api/notifications/; CPU per delivery
  fanout     one notification to N subscribers: spread time, last delivery, peak RSS
  matching   subscriptions_matching at 1,000 and at N subscriptions, with EXPLAIN
  publish    accepted POST /api/notifications/ per second vs a one-INSERT Django view (bench/baseline_app.py)
  isolation  10% of callbacks hang past the read timeout: healthy deliveries/s vs none hanging
  embedded   e2e on SQLite + the filesystem broker (no DATABASE_URL / REDIS_URL), the Procfile's worker
  latency    idle hub, one subscriber, publishes one at a time: publish-to-arrival p50 (Redis, embedded)
  waiting    N deliveries waiting for their retry in the database: worker RSS, broker memory, due to sent
  purge      N settled deliveries past retention purged while end-to-end delivery runs: purge rate, delivery
             rate during the purge vs without (PostgreSQL only)

Layouts (--pools): pool:concurrency[xinstances], `default` (the hub's own worker defaults: no -P/-c),
`procfile` (the Procfile's worker line). CPU per delivery: bench/README.md.

Why one file of about 1,800 lines: it is a program the hub never imports, and its
sections (processes, the sink, RSS sampling, CPU accounting, the publishing client,
pool layouts, the scenarios, reporting) each read alone. The scenarios are methods
of one `Bench`, which owns the processes, database and environment they all start
from and stop on exit; a module per scenario would pass that state around, so the
split waits until a scenario needs it.
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).absolute().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
PY = sys.executable
ALL_SCENARIOS = (
    "ceiling",
    "e2e",
    "fanout",
    "matching",
    "publish",
    "isolation",
    "embedded",
    "latency",
    "waiting",
    "purge",
)

# Seconds without a new delivery after which a run is declared stalled (the rest is "missing").
STALL_SECONDS = 20.0
POLL_SECONDS = 0.1
READY_TIMEOUT = 60.0


# --- Processes -------------------------------------------------------------------------


# Isolation runs with and without hanging callbacks this many times each, alternating. One round's rate
# moved by 15-25 % between identical rounds of 2,000 deliveries (4-5 s) on a 2-core machine, more than the
# 10 % the target allows: the rounds are longer now (100 notifications) and there are three of each.
ISOLATION_ROUNDS = 3
# Latency: the pause between one arrival and the next publish, the longest wait for one arrival,
# and the quiet time after the worker is ready before the first publish.
LATENCY_PAUSE_SECONDS = 0.1
LATENCY_TIMEOUT = 10.0
LATENCY_SETTLE_SECONDS = 1.0
# Waiting: stop sampling the broker this long before the deliveries are due (enqueue_due may run ahead a little).
WAITING_SAMPLE_MARGIN = 3.0
# Keys of the hub's delivery queues in Redis (hub.deliver, hub.deliver.retry, and kombu's priority variants).
DELIVER_QUEUE_PREFIX = "hub.deliver"
# Purge: the steady load publishes PURGE_PUBLISH_CHUNK notifications whenever fewer than PURGE_BACKLOG deliveries
# are owed (published, not arrived), so the workers never run dry in a measured window; each window starts
# PURGE_WARMUP_SECONDS after the load, when the workers are busy. pg_stat_activity is sampled this often.
PURGE_BACKLOG = 2000
PURGE_PUBLISH_CHUNK = 8
PURGE_WARMUP_SECONDS = 3.0
PURGE_SAMPLE_SECONDS = 0.25
# application_name (libpq's PGAPPNAME) of the purge process's connection, to tell it apart in pg_stat_activity.
PURGE_APP_NAME = "bench-purge"


class Processes:
    """Every process the benchmark starts, each in its own process group, stopped by id."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
        log = (OUT / f"{name}.log").open("ab")
        log.write(f"\n=== {dt.datetime.now().isoformat()} {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        process.bench_name = name  # type: ignore[attr-defined]
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen, grace: float = 5.0) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(reversed(self.running)):
            self.stop(process, grace=3.0)


PROCS = Processes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, data: dict | None = None, timeout: float = 30.0, headers: dict | None = None) -> object:
    body = json.dumps(data).encode() if data is not None else None
    # Only ever the bench's own http://127.0.0.1 URLs.
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def wait_http(url: str, timeout: float = READY_TIMEOUT, process: subprocess.Popen | None = None) -> None:
    """Until url answers anything at all (an HTTP error is an answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.bench_name} exited with {process.returncode}; see bench/out/")  # type: ignore[attr-defined]
        try:
            urllib.request.urlopen(url, timeout=2).read()  # noqa: S310 - a 127.0.0.1 URL of ours
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def run_checked(command: list[str], env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


# --- The sink --------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = PROCS.start("sink", [PY, str(BENCH / "sink.py"), "--port", str(self.port)], env)
        wait_http(f"{self.url}/_bench/stats", process=self.process)

    def stats(self) -> dict:
        return http_json(f"{self.url}/_bench/stats")  # type: ignore[return-value]

    def reset(self, hang_prefix: str = "/hang/", hang_seconds: float = 0.0) -> None:
        http_json(f"{self.url}/_bench/reset", {})
        http_json(f"{self.url}/_bench/config", {"hang_prefix": hang_prefix, "hang_seconds": hang_seconds})

    def records(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/_bench/records", timeout=120) as response:  # noqa: S310
            return [json.loads(line) for line in response.read().splitlines() if line]

    def wait_for(self, expected: int, max_wait: float, stall: float = STALL_SECONDS) -> dict:
        """Poll until `expected` distinct deliveries arrived, nothing new came for `stall` seconds, or max_wait passed.

        Distinct delivery ids, not POSTs: a repeated delivery must not end the wait
        with another still missing.
        """
        started = time.monotonic()
        last_count, last_change = -1, started
        while True:
            stats = self.stats()
            now = time.monotonic()
            if stats["posts"] != last_count:
                last_count, last_change = stats["posts"], now
            if stats["unique_delivery_ids"] >= expected:
                stats["ended"] = "complete"
                return stats
            if now - last_change > stall:
                stats["ended"] = f"stalled {stall:.0f}s"
                return stats
            if now - started > max_wait:
                stats["ended"] = f"max wait {max_wait:.0f}s"
                return stats
            time.sleep(POLL_SECONDS)


# --- RSS sampling -----------------------------------------------------------------------


class RssSampler:
    """Peak summed RSS of process trees, sampled in a thread."""

    def __init__(self, groups: dict[str, list[int]], interval: float = 0.1) -> None:
        self.groups = groups
        self.interval = interval
        self.peak = dict.fromkeys(groups, 0)
        self.base = {name: self._rss(pids) for name, pids in groups.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(pids: list[int]) -> int:
        total = 0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(pid)
                for process in [parent, *parent.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pids in self.groups.items():
                self.peak[name] = max(self.peak[name], self._rss(pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- Steady load and pg_stat_activity (purge) ----------------------------------------------


class SteadyLoad:
    """Publishes to `topic` in a thread, PURGE_PUBLISH_CHUNK at a time, while fewer than PURGE_BACKLOG are owed.

    Owed is accepted publishes x subscribers minus the sink's POSTs: the workers
    always have work, so the rate in a window is what they can do, not what was
    published. Every publish has its own seq.
    """

    def __init__(self, *, url: str, topic: str, subscribers: int, sink: "Sink", headers: dict, concurrency: int):
        self.url, self.topic, self.subscribers, self.sink = url, topic, subscribers, sink
        self.headers, self.concurrency = headers, concurrency
        self.results: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def accepted(self) -> int:
        return sum(1 for r in self.results if r[1] == 202)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.accepted() * self.subscribers - self.sink.stats()["posts"] < PURGE_BACKLOG:
                    chunk = publish(
                        self.url, self.topic, PURGE_PUBLISH_CHUNK, self.concurrency, 60, self.headers, len(self.results)
                    )
                    self.results += chunk
                else:
                    self._stop.wait(POLL_SECONDS / 2)
        except BaseException as exc:  # reported by stop(): a load that died must not pass for a slow hub
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"the steady load failed: {self.error!r}")


class PgActivity:
    """Samples pg_stat_activity of one database in a thread: lock waits, and the longest running statements."""

    def __init__(self, database_url: str, interval: float = PURGE_SAMPLE_SECONDS) -> None:
        self.database_url = database_url
        self.interval = interval
        self.samples = 0
        self.waits: Counter = Counter()
        self.lock_wait_samples = 0
        self.longest: dict[str, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        query = (
            "SELECT application_name, wait_event_type, wait_event, "
            "EXTRACT(EPOCH FROM clock_timestamp() - query_start)::float8, left(query, 200) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state = 'active'"
        )
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            while not self._stop.wait(self.interval):
                rows = connection.execute(query).fetchall()
                self.samples += 1
                locked = False
                for app, wait_type, wait_event, seconds, text in rows:
                    who = "purge" if app == PURGE_APP_NAME else "hub"
                    if wait_type:
                        self.waits[f"{who} {wait_type}:{wait_event}"] += 1
                        locked = locked or (wait_type == "Lock" and who == "hub")
                    if seconds is not None and seconds > self.longest.get(who, (0.0, ""))[0]:
                        self.longest[who] = (seconds, text)
                self.lock_wait_samples += locked

    def __enter__(self) -> "PgActivity":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        return {
            "samples": self.samples,
            "interval_s": self.interval,
            "hub_lock_wait_samples": self.lock_wait_samples,
            "waits": dict(self.waits.most_common()),
            "longest": {who: {"seconds": s, "query": q} for who, (s, q) in self.longest.items()},
        }


# --- CPU accounting ------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Above this share of the machine-wide CPU, processes outside the bench's groups (another job on the machine)
# make the machine-wide figure unreliable: the row says so.
QUIET_OTHER_SHARE = 0.25
# The groups a run's CPU is split into, in the order they are printed.
CPU_GROUPS = ("worker", "web", "postgres", "redis", "sink", "client")


def machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy since boot, and the part of it in interrupts.

    Busy is user + nice + system + irq + softirq of /proc/stat; idle, iowait and
    steal (time the hypervisor gave to other guests) are not. irq + softirq is
    kernel work no process is charged for, such as much of the loopback TCP path.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, (irq + softirq) / CLOCK_TICKS


def process_tree(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid)
            found += [parent, *parent.children(recursive=True)]
    return found


def postgres_processes(database: str) -> list[psutil.Process]:
    """The server's own processes and the backends connected to `database` (not other databases' backends)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] not in ("postgres", "postmaster"):
            continue
        title = " ".join(process.info["cmdline"] or ())
        # A backend's title: "postgres: 15/main: USER DATABASE HOST(PORT) STATE".
        backend = "(" in title or "[local]" in title
        if not backend or f" {database} " in title:
            found.append(process)
    return found


def named_processes(name: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == name]


class CpuMeter:
    """Busy CPU over a window: the machine's (/proc/stat) and each group's processes' (/proc/<pid>/stat).

    `groups` maps a group name to a function listing its processes now. A thread
    samples every process's user+system time, so a process that ends within the
    window still counts up to its last sample, and one that starts within it
    counts from zero.
    """

    def __init__(self, groups: dict[str, object], interval: float = 0.5) -> None:
        self.groups = groups
        self.interval = interval
        self.first: dict[tuple[int, float], float] = {}
        self.last: dict[tuple[int, float], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.result: dict = {}

    def _sample(self) -> None:
        for group, lister in self.groups.items():
            for process in lister():
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    key = (process.pid, process.create_time())
                    used = times.user + times.system
                    if key not in self.first:
                        self.first[key] = 0.0 if key[1] >= self.started_wall else used
                    self.last[key] = (group, used)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @staticmethod
    def _everyone() -> dict[tuple[int, float], tuple[str, float]]:
        """Every process's (name, user+system seconds), keyed by (pid, start time)."""
        found = {}
        for process in psutil.process_iter(["name", "cpu_times", "create_time"]):
            times, created = process.info["cpu_times"], process.info["create_time"]
            if times is not None and created is not None:
                found[(process.pid, created)] = (process.info["name"] or "?", times.user + times.system)
        return found

    def _others(self, before: dict, after: dict) -> list[tuple[str, float]]:
        """The processes outside the groups that used the most CPU in the window (those alive at both ends)."""
        used: Counter = Counter()
        for key, (name, seconds) in after.items():
            if key not in self.last and key in before:
                used[f"{name}[{key[0]}]"] += seconds - before[key][1]
        return [(name, round(seconds, 3)) for name, seconds in used.most_common(5) if seconds > 0]

    def __enter__(self) -> "CpuMeter":
        self.started_wall = time.time() - 0.05
        self._before = self._everyone()
        self._sample()
        self.machine_start = machine_busy_seconds()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        busy, interrupts = machine_busy_seconds()
        machine, interrupts = busy - self.machine_start[0], interrupts - self.machine_start[1]
        wall = time.monotonic() - self.started
        self._sample()
        others = self._others(self._before, self._everyone())
        groups = dict.fromkeys(self.groups, 0.0)
        for key, (group, used) in self.last.items():
            groups[group] += max(0.0, used - self.first[key])
        self.result = {
            "machine_s": machine,
            "interrupts_s": interrupts,
            "wall_s": wall,
            "cores": os.cpu_count(),
            "groups_s": groups,
            "top_other_s": others,
        }


def cpu_per_delivery(cpu: dict, deliveries: int) -> dict:
    """Milliseconds of CPU per delivery: machine-wide and by group."""
    n = max(1, deliveries)
    return {
        "machine_ms": cpu["machine_s"] * 1000 / n,
        "groups_ms": {g: s * 1000 / n for g, s in cpu["groups_s"].items()},
        "attributed_ms": sum(cpu["groups_s"].values()) * 1000 / n,
        "interrupts_ms": cpu["interrupts_s"] * 1000 / n,
        "busy": cpu["machine_s"] / max(1e-9, cpu["wall_s"] * cpu["cores"]),
    }


def cpu_text(per: dict) -> str:
    parts = ", ".join(f"{g} {ms:.2f}" for g, ms in per["groups_ms"].items())
    other = per["machine_ms"] - per["attributed_ms"] - per["interrupts_ms"]
    noisy = other > QUIET_OTHER_SHARE * per["machine_ms"]
    return (
        f"CPU {per['machine_ms']:.2f} ms/delivery machine-wide ({per['busy'] * 100:.0f}% busy); "
        f"by group {parts} (sum {per['attributed_ms']:.2f}; irq/softirq {per['interrupts_ms']:.2f}; "
        f"other processes {other:.2f}{': the machine was not quiet, compare the group sums' if noisy else ''})"
    )


# --- Publishing client ----------------------------------------------------------------------


async def _publish(
    url: str, topic: str, count: int, concurrency: int, max_seconds: float, headers: dict[str, str], first: int
) -> list[tuple]:
    """POST count notifications (seq from `first` on), concurrency at a time; (seq, status, sent, answered) each."""
    results: list[tuple] = []
    deadline = time.monotonic() + max_seconds
    sequence = iter(range(first, first + count))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout, headers=headers
    ) as session:

        async def client() -> None:
            for seq in sequence:
                if time.monotonic() > deadline:
                    return
                sent = time.time()
                payload = {"topic": topic, "content": {"seq": seq, "t": sent}}
                try:
                    async with session.post(url, json=payload) as response:
                        await response.read()
                        status = response.status
                except (TimeoutError, aiohttp.ClientError):
                    status = 0
                results.append((seq, status, sent, time.time()))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def publish(
    url: str,
    topic: str,
    count: int,
    concurrency: int,
    max_seconds: float,
    headers: dict[str, str] | None = None,
    first: int = 0,
) -> list[tuple]:
    results = asyncio.run(_publish(url, topic, count, concurrency, max_seconds, headers or {}, first))
    refused = Counter(r[1] for r in results if r[1] != 202)
    if results and len(refused) and sum(refused.values()) == len(results):
        raise RuntimeError(f"every publish was refused (HTTP status: count {dict(refused)}); see bench/out/web*.log")
    return results


def api_headers(env: dict[str, str]) -> dict[str, str]:
    """A publish token when the project has API tokens (manage.py hub_token), else no header."""
    if not (ROOT / "subscriptions" / "management" / "commands" / "hub_token.py").exists():
        return {}
    output = run_checked([PY, "manage.py", "hub_token", "bench-publisher", "--publish"], env)
    return {"Authorization": f"Token {output.strip().splitlines()[-1].strip()}"}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# --- Pool specifications -------------------------------------------------------------------


def refused(r: dict) -> str:
    n = r["published"] - r["accepted"]
    return f", {n} publishes refused" if n else ""


def parse_pool(spec: str) -> tuple[str, int, int]:
    """`prefork:8`, `threads:32x2` -> (pool, concurrency, worker instances)."""
    pool, _, rest = spec.partition(":")
    concurrency, _, instances = rest.partition("x")
    return pool, int(concurrency or 4), int(instances or 1)


# Layouts that are not pool:concurrency: the hub's own defaults (no -P/-c), and the Procfile's worker line.
DEFAULT_LAYOUT = "default"
PROCFILE_LAYOUT = "procfile"
# Pools the bare ceiling app can run with (Celery's aliases; eventlet/gevent are not installed).
CEILING_POOLS = ("prefork", "processes", "threads", "solo")


def procfile_worker_args() -> list[str]:
    """The arguments after `worker` on the Procfile's worker line (what scripts/run starts)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "worker":
            words = shlex.split(command)
            after_celery = words[words.index("celery") + 1 :]
            return after_celery[after_celery.index("worker") + 1 :]
    raise RuntimeError("the Procfile has no worker: line")


def layout_args(spec: str) -> tuple[list[str], int]:
    """The worker command's pool arguments for a layout, and how many worker instances to start."""
    if spec == DEFAULT_LAYOUT:
        return [], 1
    if spec == PROCFILE_LAYOUT:
        return procfile_worker_args(), 1
    pool, concurrency, instances = parse_pool(spec)
    return [f"--pool={pool}", f"--concurrency={concurrency}"], instances


# --- The benchmark ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.notes: list[str] = []
        self.details: dict[str, object] = {}
        self.ceilings: dict[str, float] = {}
        self.redis_url = f"redis://127.0.0.1:{args.redis_port}/{args.redis_db}"
        self.database_url = f"postgres://postgres@127.0.0.1:{args.pg_port}/{args.database}"
        self.var_dir = OUT / "var-pg"
        self.web_port = free_port()
        self.web: subprocess.Popen | None = None
        self.sink: Sink | None = None
        self.headers: dict[str, dict[str, str]] = {}
        self.profiled_runs = 0  # --profile: each run's profile gets a file of its own

    # -- helpers --

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def row(self, scenario: str, setup: str, result: str, target: str = "", verdict: str = "") -> None:
        self.rows.append((scenario, setup, result, target, verdict))
        self.log(f"{scenario} | {setup} | {result} | {target} {verdict}")

    def hub_env(self, *, embedded: bool = False, read_timeout: float = 10.0, web_port: int | None = None) -> dict:
        # Start from a clean slate: nothing from the caller's .env may point the hub elsewhere.
        prefixes = ("DATABASE_", "REDIS_", "CELERY_", "HUB_", "DJANGO_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.update(
            DJANGO_SETTINGS_MODULE="websubhub.settings",
            PYTHONUNBUFFERED="1",
            DJANGO_SECRET_KEY="bench-only-not-a-secret",  # noqa: S106 - a throwaway key for local processes
            HUB_URL=f"http://127.0.0.1:{web_port or self.web_port}/hub",
            HUB_HTTP_CONNECT_TIMEOUT="2",
            HUB_HTTP_READ_TIMEOUT=str(read_timeout),
            # The per-callback limiter (being added): high enough never to interfere.
            HUB_CALLBACK_RATE_LIMIT="1000000/1s",
            # The sink is on 127.0.0.1: lift the outbound address guard (as scripts/run and scripts/test do).
            HUB_ALLOW_PRIVATE_ADDRESSES="true",
            # The API's own throttles (being added) would cap what the publish scenario measures.
            HUB_THROTTLE_PUBLISH="1000000/s",
            HUB_THROTTLE_SUBSCRIBE="1000000/s",
            # No beat runs, but keep the sweep from re-sending anything if one did.
            HUB_SWEEP_GRACE_SECONDS="86400",
            HUB_LOG_LEVEL=self.args.hub_log_level,
        )
        if embedded:
            env["HUB_VAR_DIR"] = str(OUT / "var-embedded")
        else:
            env.update(HUB_VAR_DIR=str(self.var_dir), DATABASE_URL=self.database_url, REDIS_URL=self.redis_url)
        return env

    def dbtool(self, env: dict, *arguments: str, timeout: float = 900) -> object:
        output = run_checked([PY, str(BENCH / "dbtool.py"), *arguments], env, timeout=timeout)
        return json.loads(output.strip().splitlines()[-1])

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    # -- setup --

    def setup(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        self.var_dir.mkdir(parents=True, exist_ok=True)
        needs_pg = set(self.args.scenarios) - {"embedded"}
        if needs_pg:
            self.log(f"database {self.args.database}: drop and create, migrate")
            psql = ["psql", "-h", "127.0.0.1", "-p", str(self.args.pg_port), "-U", "postgres", "-q"]
            psql += ["-v", "ON_ERROR_STOP=1"]
            run_checked([*psql, "-c", f'DROP DATABASE IF EXISTS "{self.args.database}" WITH (FORCE)'], dict(os.environ))
            run_checked([*psql, "-c", f'CREATE DATABASE "{self.args.database}"'], dict(os.environ))
            run_checked([PY, "manage.py", "migrate", "-v0"], self.hub_env())
            self.flush_redis()
        self.sink = Sink()
        if needs_pg & {"e2e", "fanout", "publish", "isolation", "latency", "purge"}:
            self.web = self.start_web(self.hub_env(), self.web_port, "web")

    def start_gunicorn(self, env: dict, port: int, name: str, app: str, ready_path: str) -> subprocess.Popen:
        """gunicorn with the hub's settings file (gunicorn.conf.py) and --web-workers workers."""
        command = [PY, "-m", "gunicorn", "-c", "gunicorn.conf.py", app, "--bind", f"127.0.0.1:{port}"]
        command += ["--workers", str(self.args.web_workers)]
        process = PROCS.start(name, command, env)
        wait_http(f"http://127.0.0.1:{port}{ready_path}", process=process)
        return process

    def start_web(self, env: dict, port: int, name: str) -> subprocess.Popen:
        process = self.start_gunicorn(env, port, name, "websubhub.wsgi:application", "/api/notifications/0/")
        self.headers[f"http://127.0.0.1:{port}"] = api_headers(env)
        return process

    def start_baseline(self, port: int) -> subprocess.Popen:
        """bench/baseline_app.py on the same database, gunicorn settings and worker count as the hub's web."""
        env = self.hub_env()
        env.update(DJANGO_SETTINGS_MODULE="baseline_app", PYTHONPATH=str(BENCH))
        run_checked([PY, str(BENCH / "baseline_app.py"), "create-table"], env)
        process = self.start_gunicorn(env, port, "web-baseline", "baseline_app:application", "/api/notifications/")
        self.headers[f"http://127.0.0.1:{port}"] = {}
        return process

    def start_workers(
        self,
        app: str,
        spec: str,
        env: dict,
        *,
        cwd: Path = ROOT,
        loglevel: str | None = None,
        embedded: bool = False,
        extra: tuple[str, ...] = (),
    ) -> list[subprocess.Popen]:
        """`celery -A app worker` in layout `spec`; `extra` (e.g. -B) goes to the first instance only."""
        pool_args, instances = layout_args(spec)
        has_loglevel = any(a.startswith(("--loglevel", "-l")) for a in pool_args)
        processes, names = [], []
        for i in range(instances):
            name = f"bench{i}-{os.getpid()}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
            names.append(name)
            command = [PY, "-m", "celery", "-A", app, "worker", *pool_args]
            command += ["--without-gossip", "--without-mingle", f"--hostname={name}"]
            if not has_loglevel:
                command.append(f"--loglevel={loglevel or self.args.worker_loglevel}")
            if i == 0:
                command += list(extra)
            processes.append(PROCS.start(f"worker-{app}", command, env, cwd=cwd))
        if app == "websubhub":
            # A threads-pool hub worker starts HUB_WORKER_PROCESSES - 1 siblings, NAME-2@HOST, ...
            # (websubhub/siblings.py): ready means they answer too, so figures taken "at ready"
            # (the waiting scenario's RSS) include them.
            names += self._sibling_names(spec, names, pool_args)
        if embedded:
            self._wait_ready_log(processes, f"worker-{app}", names)
        else:
            self._wait_ready_ping(processes, names)
        return processes

    def _sibling_names(self, spec: str, names: list[str], pool_args: list[str]) -> list[str]:
        pool = self.default_layout()[0]
        for arg in pool_args:
            if arg.startswith("--pool="):
                pool = arg.split("=", 1)[1]
        for flag, value in itertools.pairwise(pool_args):
            if flag in ("-P", "--pool"):
                pool = value
        processes = self.details["default_layout"]["processes"]
        if pool != "threads" or processes < 2:
            return []
        siblings = []
        for name in names:
            base, _, host = name.partition("@")
            siblings += [f"{base}-{number}@{host}" for number in range(2, processes + 1)]
        return siblings

    def default_layout(self) -> tuple[str, int]:
        """The pool and concurrency `celery -A websubhub worker` uses with no -P/-c (the hub's settings)."""
        if "default_layout" not in self.details:
            code = (
                "from django.conf import settings; "
                "print(settings.CELERY_WORKER_POOL, settings.CELERY_WORKER_CONCURRENCY or 0, "
                "settings.HUB_WORKER_PROCESSES)"
            )
            words = run_checked([PY, "-c", code], self.hub_env()).split()
            pool, concurrency = words[-3], int(words[-2]) or os.cpu_count() or 1
            self.details["default_layout"] = {"pool": pool, "concurrency": concurrency, "processes": int(words[-1])}
        layout = self.details["default_layout"]
        return layout["pool"], layout["concurrency"]

    def describe(self, spec: str) -> str:
        if spec != DEFAULT_LAYOUT:
            return spec
        pool, concurrency = self.default_layout()
        return f"default ({pool}:{concurrency} from the hub's settings)"

    def ceiling_layout(self, spec: str) -> tuple[str, str]:
        """The ceiling app's layout for a hub layout, and a note when it is not the same.

        A hub worker with the threads pool runs as HUB_WORKER_PROCESSES processes
        (websubhub/siblings.py): the ceiling app then runs as many instances of
        the same pool and concurrency, so both use the same processes.
        """
        self.default_layout()
        processes = self.details["default_layout"]["processes"]
        if spec != DEFAULT_LAYOUT:
            pool, concurrency, instances = parse_pool(spec)
            if pool == "threads" and instances == 1 and processes > 1:
                return f"threads:{concurrency}x{processes}", (
                    f"the hub's threads worker runs as HUB_WORKER_PROCESSES={processes} processes: "
                    f"the ceiling app as {processes} instances"
                )
            return spec, ""
        pool, concurrency = self.default_layout()
        if pool in CEILING_POOLS:
            if pool == "threads" and processes > 1:
                return f"threads:{concurrency}x{processes}", (
                    f"HUB_WORKER_PROCESSES={processes}: the ceiling app as {processes} instances"
                )
            return f"{pool}:{concurrency}", ""
        fallback = f"prefork:{(os.cpu_count() or 1) * 4}"
        return fallback, f"the default pool {pool!r} is not one the ceiling app can use: ceiling runs {fallback}"

    def cpu_groups(self, workers: list[subprocess.Popen], web: subprocess.Popen | None, embedded: bool) -> dict:
        groups: dict[str, object] = {"worker": lambda: process_tree([w.pid for w in workers])}
        if web is not None:
            groups["web"] = lambda: process_tree([web.pid])
        if not embedded:
            groups["postgres"] = lambda: postgres_processes(self.args.database)
            groups["redis"] = lambda: named_processes("redis-server")
        groups["sink"] = lambda: process_tree([self.sink.process.pid])
        groups["client"] = lambda: [psutil.Process()]
        return groups

    def _wait_ready_ping(self, processes: list[subprocess.Popen], names: list[str]) -> None:
        from celery import Celery

        control = Celery("bench-control", broker=self.redis_url)
        deadline = time.monotonic() + READY_TIMEOUT
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited with {process.returncode}; see bench/out/")
            for reply in control.control.ping(destination=list(pending), timeout=0.5) or []:
                pending -= set(reply)
        if pending:
            raise RuntimeError(f"workers not ready after {READY_TIMEOUT}s: {pending}")

    def _wait_ready_log(self, processes: list[subprocess.Popen], log_name: str, names: list[str]) -> None:
        path = OUT / f"{log_name}.log"
        offset = path.stat().st_size if path.exists() else 0
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited with {process.returncode}; see {path}")
            with path.open("rb") as f:
                text = f.read()
            if all(f"{name} ready.".encode() in text for name in names):
                return
            time.sleep(0.1)
        raise RuntimeError(f"workers not ready after {READY_TIMEOUT}s; see {path} (from byte {offset})")

    def stop_workers(self, processes: list[subprocess.Popen]) -> None:
        for process in processes:
            PROCS.stop(process)

    # -- scenario 1: ceiling --

    def ceiling(self, spec: str) -> None:
        n = self.args.ceiling_tasks
        layout, note = self.ceiling_layout(spec)
        self.flush_redis()
        self.sink.reset()
        env = self.hub_env()
        env.update(BENCH_BROKER_URL=self.redis_url, PYTHONPATH=str(BENCH))
        # A bare Celery app: without this Celery's Django fix-up would load the project.
        env.pop("DJANGO_SETTINGS_MODULE", None)
        workers = self.start_workers("ceiling_app", layout, env, cwd=BENCH)
        from celery import Celery

        producer_app = Celery("bench-producer", broker=self.redis_url)
        producer_app.conf.task_serializer = "json"
        try:
            with CpuMeter(self.cpu_groups(workers, self.web, embedded=False)) as meter:
                started = time.time()
                with producer_app.producer_or_acquire() as producer:
                    for seq in range(n):
                        body = json.dumps({"seq": seq, "t": time.time()}, separators=(",", ":"))
                        producer_app.send_task(
                            "bench.post",
                            kwargs={
                                "url": f"{self.sink.url}/ceil/{seq % 100}",
                                "body": body,
                                "delivery_id": str(uuid.uuid4()),
                            },
                            producer=producer,
                            queue="bench.ceiling",
                        )
                enqueued = time.time()
                stats = self.sink.wait_for(n, self.args.max_wait)
        finally:
            self.stop_workers(workers)
        rate = stats["posts"] / (stats["last"] - started) if stats["posts"] else 0.0
        cpu = cpu_per_delivery(meter.result, stats["posts"])
        self.ceilings[spec] = {"rate": rate, "cpu": cpu}
        if note:
            self.notes.append(f"ceiling for `{spec}`: {note}.")
        self.row(
            "1 ceiling",
            f"{self.describe(spec)}: ceiling app {layout}, {n} tasks",
            f"{rate:,.0f} POSTs/s (enqueue {n / (enqueued - started):,.0f}/s; {stats['posts']}/{n}, "
            f"{stats['ended']}); {cpu_text(cpu)}",
        )
        self.details[f"ceiling {spec}"] = {"rate": rate, "layout": layout, "cpu": meter.result, **stats}

    # -- scenario 2 (and 6, 7): end to end --

    def e2e_run(
        self,
        *,
        spec: str,
        subscribers: int,
        notifications: int,
        env: dict,
        web_url: str,
        topic: str,
        hang_every: int = 0,
        hang_seconds: float = 0.0,
        embedded: bool = False,
        loglevel: str | None = None,
        sample_rss: bool = False,
        web: subprocess.Popen | None = None,
    ) -> dict:
        """Seed, start workers, publish, wait; the measured figures (CPU from the first publish to the last arrival).

        `web` is the web server whose CPU counts (self.web unless given).
        """
        self.dbtool(env, "reset")
        if not embedded:
            self.flush_redis()
        self.sink.reset(hang_seconds=hang_seconds)
        self.dbtool(
            env,
            "seed",
            "--topic",
            topic,
            "--count",
            str(subscribers),
            "--base",
            self.sink.url,
            "--hang-every",
            str(hang_every),
        )
        healthy_paths = {f"/cb/{i}" for i in range(subscribers) if not (hang_every and i % hang_every == 0)}
        expected = len(healthy_paths) * notifications
        workers = self.start_workers("websubhub", spec, env, loglevel=loglevel, embedded=embedded)
        web = web or self.web
        groups = {"worker": [w.pid for w in workers]}
        if web is not None:
            groups["web"] = [web.pid]
        profiler = self._profile_start(workers, topic) if self.args.profile and not embedded else None
        meter = CpuMeter(self.cpu_groups(workers, web, embedded))
        try:
            with RssSampler(groups) if sample_rss else contextlib.nullcontext() as sampler, meter:
                results = publish(
                    f"{web_url}/api/notifications/",
                    topic,
                    notifications,
                    self.args.publish_concurrency_e2e,
                    self.args.max_wait,
                    self.headers[web_url],
                )
                accepted = [r for r in results if r[1] == 202]
                stats = self.sink.wait_for(expected, self.args.max_wait, stall=max(STALL_SECONDS, 3 * hang_seconds))
            records = self.sink.records()
            notes = self.dbtool(env, "notifications")
            deliveries = self.dbtool(env, "deliveries")
        finally:
            if profiler is not None:
                self.profile_stop(profiler)
            self.stop_workers(workers)
        first_publish = min(r[2] for r in results) if results else time.time()
        healthy = [r for r in records if r["p"] in healthy_paths]
        pairs: Counter = Counter()
        latencies = []
        for r in healthy:
            content = json.loads(r["b"])
            pairs[(r["p"], content["seq"])] += 1
            latencies.append(r["t"] - content["t"])
        # A refused publish is a notification that never reaches anyone: its deliveries count as missing.
        expected_pairs = {(p, r[0]) for p in healthy_paths for r in results}
        missing = len(expected_pairs - set(pairs))
        duplicates = sum(c - 1 for c in pairs.values())
        last = max((r["t"] for r in healthy), default=first_publish)
        elapsed = max(1e-9, last - first_publish)
        spreads = [n[2] - n[1] for n in notes if n[2] is not None]
        out = {
            "accepted": len(accepted),
            "published": len(results),
            "expected": len(expected_pairs),
            "received": len(healthy),
            "missing": missing,
            "duplicates": duplicates,
            "rate": len(pairs) / elapsed,
            "elapsed": elapsed,
            "publish_seconds": max((r[3] for r in results), default=first_publish) - first_publish,
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "spread_max": max(spreads, default=float("nan")),
            "unspread": sum(1 for n in notes if n[2] is None),
            "deliveries": deliveries,
            "hung": stats.get("hung", 0),
            "ended": stats["ended"],
            "cpu_raw": meter.result,
            "cpu": cpu_per_delivery(meter.result, len(records)),
        }
        if sample_rss:
            out["rss_peak"] = sampler.peak
            out["rss_base"] = sampler.base
        return out

    def _profile_start(self, workers: list[subprocess.Popen], topic: str) -> subprocess.Popen | None:
        """py-spy on the first worker and its pool children, as collapsed stacks in bench/out/ (optional)."""
        # One file per run: a scenario's rounds (isolation's with and without hanging callbacks) each get theirs.
        self.profiled_runs += 1
        name = f"profile-{topic.split('.')[1].lower()}-{len(self.details)}-run{self.profiled_runs}"
        return self.profile_process(workers[0].pid, name, self.args.max_wait)

    def profile_process(self, pid: int, name: str, seconds: float) -> subprocess.Popen | None:
        """py-spy on process pid and its children for `seconds`, into bench/out/{name}.txt (collapsed stacks)."""
        py_spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if not Path(py_spy).exists():
            self.log("--profile: py-spy not found (pip install py-spy into .venv); not profiling")
            return None
        command = [
            py_spy,
            "record",
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            "50",
            "--duration",
            str(round(seconds)),
            "-o",
            str(OUT / f"{name}.txt"),
            "-p",
            str(pid),
        ]
        if self.args.profile == "idle":
            command.append("--idle")
        elif self.args.profile == "gil":
            command.append("--gil")
        process = PROCS.start(name, command, dict(os.environ))
        time.sleep(1.0)  # let it attach before the load starts
        self.notes.append(f"profile: bench/out/{name}.txt (py-spy collapsed stacks)")
        return process

    def profile_stop(self, profiler: subprocess.Popen) -> None:
        # py-spy writes its file on SIGINT.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(profiler.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(30)
        PROCS.stop(profiler)

    def e2e(self, spec: str) -> None:
        s, m = self.args.subscribers, self.args.notifications
        r = self.e2e_run(
            spec=spec,
            subscribers=s,
            notifications=m,
            env=self.hub_env(),
            web_url=f"http://127.0.0.1:{self.web_port}",
            topic="BENCH.E2E.topic",
        )
        self.details[f"e2e {spec}"] = r
        ceiling = self.ceilings.get(spec)
        ratio = f", {r['rate'] / ceiling['rate']:.2f}x ceiling" if ceiling else ""
        ok = r["missing"] == 0 and r["duplicates"] == 0 and (not ceiling or r["rate"] >= 0.7 * ceiling["rate"])
        self.row(
            "2 end to end",
            f"{self.describe(spec)}, S={s} M={m}",
            f"{r['rate']:,.0f} deliveries/s{ratio} (CPU {r['cpu']['machine_ms']:.2f} ms/delivery); latency "
            f"p50/p95/p99 {r['p50']:.2f}/{r['p95']:.2f}/{r['p99']:.2f}s; "
            f"missing {r['missing']}, dup {r['duplicates']}{refused(r)} ({r['ended']})",
            ">=0.7x ceiling, 0 missing, 0 dup",
            "ok" if ok else "MISS",
        )
        cpu = r["cpu"]
        if ceiling:
            cpu_ratio = cpu["machine_ms"] / ceiling["cpu"]["machine_ms"]
            versus = (
                f"{cpu_ratio:.2f}x the ceiling's {ceiling['cpu']['machine_ms']:.2f} ms "
                f"(by group: {cpu['attributed_ms'] / ceiling['cpu']['attributed_ms']:.2f}x)"
            )
            verdict = "ok" if cpu_ratio <= 1.5 else "MISS"
        else:
            versus, verdict = "no ceiling in this run", ""
        self.row(
            "2 CPU per delivery",
            f"{self.describe(spec)}, e2e above ({r['rate']:,.0f}/s)",
            f"{versus}; {cpu_text(cpu)}",
            "<=1.5x ceiling",
            verdict,
        )

    # -- scenario 3: fan-out --

    def fanout(self, spec: str) -> None:
        n = self.args.fanout
        r = self.e2e_run(
            spec=spec,
            subscribers=n,
            notifications=1,
            env=self.hub_env(),
            web_url=f"http://127.0.0.1:{self.web_port}",
            topic="BENCH.FANOUT.topic",
            sample_rss=True,
        )
        self.details[f"fanout {spec}"] = r
        mb = 1024 * 1024
        growth = (r["rss_peak"]["worker"] - r["rss_base"]["worker"]) / mb
        ok = r["spread_max"] < 1.0 and r["missing"] == 0 and r["elapsed"] < 10.0 and growth < 100
        self.row(
            "3 fan-out",
            f"{self.describe(spec)}, 1 notification -> {n:,}",
            f"spread {r['spread_max']:.2f}s; last delivery {r['elapsed']:.2f}s ({r['rate']:,.0f}/s); "
            f"missing {r['missing']}; worker RSS peak {r['rss_peak']['worker'] / mb:.0f} MB (+{growth:.0f}); "
            f"web RSS peak {r['rss_peak'].get('web', 0) / mb:.0f} MB; {cpu_text(r['cpu'])}",
            "spread <1s, all delivered <10s, worker +<100MB",
            "ok" if ok else "MISS",
        )

    # -- scenario 4: matching --

    def matching(self) -> None:
        env = self.hub_env()
        self.dbtool(env, "reset")
        sizes = f"1000,{self.args.match_subscriptions}"
        self.log(f"matching: inserting up to {self.args.match_subscriptions:,} subscriptions (COPY)")
        r = self.dbtool(env, "matching", "--sizes", sizes, "--topics-per-sub", str(self.args.match_topics_per_sub))
        small, large = r["results"][0], r["results"][-1]
        ratio = large["median_ms"] / small["median_ms"]
        self.row(
            "4 matching",
            f"{small['size']:,} vs {large['size']:,} subs ({large['generated_topics']:,} topics); "
            f"{len(r['keys'])} keys, {large['matched']} matched",
            f"{small['median_ms']:.2f} ms vs {large['median_ms']:.2f} ms median ({ratio:.2f}x); "
            f"first call {large['first_ms']:.1f} ms; COPY {large['insert_s']:.0f}s",
            "<=2x",
            "ok" if ratio <= 2 else "MISS",
        )
        self.details["matching"] = r
        self.notes.append(f"EXPLAIN ANALYZE at {large['size']:,} subscriptions:\n\n```\n{large['explain']}\n```")
        self.dbtool(env, "reset")

    # -- scenario 5: publish --

    def publish_round(self, web_url: str, web: subprocess.Popen) -> dict:
        n, c = self.args.publish_requests, self.args.publish_concurrency
        groups: dict[str, object] = {
            "web": lambda: process_tree([web.pid]),
            "postgres": lambda: postgres_processes(self.args.database),
            "redis": lambda: named_processes("redis-server"),
            "client": lambda: [psutil.Process()],
        }
        with CpuMeter(groups) as meter:
            results = publish(
                f"{web_url}/api/notifications/", "BENCH.PUBLISH.nobody", n, c, self.args.max_wait, self.headers[web_url]
            )
        accepted = [r for r in results if r[1] == 202]
        cpu = cpu_per_delivery(meter.result, len(accepted))
        elapsed = max(r[3] for r in results) - min(r[2] for r in results)
        latencies = [r[3] - r[2] for r in accepted]
        return {
            "rate": len(accepted) / elapsed,
            "accepted": len(accepted),
            "sent": len(results),
            "refused": dict(Counter(r[1] for r in results if r[1] != 202)),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "cpu_ms": cpu["groups_ms"],
            "machine_ms": cpu["machine_ms"],
        }

    def publish_throughput(self) -> None:
        env = self.hub_env()
        self.dbtool(env, "reset")
        self.flush_redis()
        n, c, rounds = self.args.publish_requests, self.args.publish_concurrency, self.args.publish_rounds
        hub_url = f"http://127.0.0.1:{self.web_port}"
        port = free_port()
        baseline = self.start_baseline(port)
        hubs, bases = [], []
        try:
            # Warm both up (imports, the first connections of each process's pool), unmeasured.
            for url in (hub_url, f"http://127.0.0.1:{port}"):
                publish(f"{url}/api/notifications/", "BENCH.PUBLISH.warmup", 4 * c, c, 60, self.headers[url])
            self.flush_redis()
            # Alternating rounds, so that drift on a shared machine hits both sides alike.
            for index in range(rounds):
                profiler = None
                if self.args.profile and index == 0:
                    profiler = self.profile_process(self.web.pid, "profile-publish-web", 30)
                hubs.append(self.publish_round(hub_url, self.web))
                if profiler is not None:
                    self.profile_stop(profiler)
                self.flush_redis()
                bases.append(self.publish_round(f"http://127.0.0.1:{port}", baseline))
        finally:
            PROCS.stop(baseline)
        rate = statistics.mean(r["rate"] for r in hubs)
        base_rate = statistics.mean(r["rate"] for r in bases)
        ratio = rate / base_rate if base_rate else float("nan")
        # Each round's hub rate over the baseline round right after it: how far the figure moves within one run.
        round_ratios = [h["rate"] / b["rate"] for h, b in zip(hubs, bases, strict=True) if b["rate"]]
        spread_text = f"; rounds {min(round_ratios):.2f}x-{max(round_ratios):.2f}x" if len(round_ratios) > 1 else ""
        hub, base = hubs[-1], bases[-1]
        web_ms = statistics.mean(r["cpu_ms"]["web"] for r in hubs)
        base_web_ms = statistics.mean(r["cpu_ms"]["web"] for r in bases)
        machine_ms = statistics.mean(r["machine_ms"] for r in hubs)
        base_machine_ms = statistics.mean(r["machine_ms"] for r in bases)
        refused_text = "".join(
            f"; {name} refused {r['sent'] - r['accepted']} {r['refused']}"
            for name, r in (("hub", hub), ("baseline", base))
            if r["refused"]
        )
        self.row(
            "5 publish",
            f"{n} POSTs, {c} concurrent, gunicorn {self.args.web_workers} workers x 4 threads, no worker running; "
            f"baseline: bench/baseline_app.py (one INSERT), same gunicorn and database; mean of {rounds} rounds",
            f"{rate:,.0f} accepted/s vs baseline {base_rate:,.0f}/s ({ratio:.2f}x); p50/p99 "
            f"{hub['p50'] * 1000:.0f}/{hub['p99'] * 1000:.0f} ms vs "
            f"{base['p50'] * 1000:.0f}/{base['p99'] * 1000:.0f} ms{spread_text}; "
            f"web CPU {web_ms:.2f} vs {base_web_ms:.2f} "
            f"ms/request ({base_web_ms / web_ms:.2f}x), machine {machine_ms:.2f} vs {base_machine_ms:.2f}"
            f"{refused_text}",
            ">=0.7x baseline",
            "ok" if ratio >= 0.7 and not hub["refused"] else "MISS",
        )
        self.details["publish"] = {"hub": hubs, "baseline": bases, "ratio": ratio, "round_ratios": round_ratios}
        self.flush_redis()

    # -- scenario 6: isolation --

    def isolation(self, spec: str) -> None:
        s, m, timeout = self.args.iso_subscribers, self.args.iso_notifications, self.args.hang_timeout
        common = {
            "spec": spec,
            "subscribers": s,
            "notifications": m,
            "web_url": f"http://127.0.0.1:{self.web_port}",
            "topic": "BENCH.ISOLATION.topic",
        }
        env = self.hub_env(read_timeout=timeout)
        # Two rounds, alternating, so that drift on a shared machine hits both sides alike.
        bases, hungs = [], []
        for _ in range(ISOLATION_ROUNDS):
            bases.append(self.e2e_run(env=env, **common))
            hungs.append(self.e2e_run(env=env, hang_every=10, hang_seconds=timeout + 1.0, **common))
        base = {**bases[-1], "rate": statistics.mean(r["rate"] for r in bases)}
        hung = {
            **hungs[-1],
            "rate": statistics.mean(r["rate"] for r in hungs),
            "missing": sum(r["missing"] for r in hungs),
        }
        self.details[f"isolation {spec}"] = {"baseline": bases, "hanging": hungs}
        loss = 1 - hung["rate"] / base["rate"] if base["rate"] else float("nan")
        # Each hanging round beside the round without that came just before it.
        pairs = [h["rate"] / b["rate"] - 1 for h, b in zip(hungs, bases, strict=True) if b["rate"]]
        pairs_text = f"; rounds {min(pairs) * 100:+.0f}% to {max(pairs) * 100:+.0f}%" if len(pairs) > 1 else ""
        self.row(
            "6 isolation",
            f"{self.describe(spec)}, S={s} M={m}, 10% hang > {timeout:g}s timeout, mean of {ISOLATION_ROUNDS} rounds",
            f"healthy {hung['rate']:,.0f}/s vs {base['rate']:,.0f}/s with none hanging "
            f"({-loss * 100:+.0f}%{pairs_text}); "
            f"healthy missing {hung['missing']} ({hung['ended']})",
            "lose <=10%",
            "ok" if loss <= 0.10 and hung["missing"] == 0 else "MISS",
        )

    # -- scenario 7: embedded --

    @contextlib.contextmanager
    def embedded_hub(self):
        """A fresh embedded hub (SQLite + filesystem broker under bench/out/var-embedded) and its web server."""
        var = OUT / "var-embedded"
        shutil.rmtree(var, ignore_errors=True)
        port = free_port()
        env = self.hub_env(embedded=True, web_port=port)
        run_checked([PY, "manage.py", "migrate", "-v0"], env)
        web = self.start_web(env, port, "web-embedded")
        try:
            yield env, f"http://127.0.0.1:{port}", web
        finally:
            PROCS.stop(web)

    def embedded(self) -> None:
        s, m = self.args.embedded_subscribers, self.args.embedded_notifications
        spec = self.args.embedded_pool
        with self.embedded_hub() as (env, web_url, web):
            r = self.e2e_run(
                spec=spec,
                subscribers=s,
                notifications=m,
                env=env,
                web_url=web_url,
                topic="BENCH.EMBEDDED.topic",
                embedded=True,
                loglevel="INFO",
                web=web,
            )
        self.details["embedded"] = r
        ok = r["missing"] == 0 and r["duplicates"] == 0 and r["rate"] >= 300
        self.row(
            "7 embedded",
            f"SQLite + filesystem broker, {self.embedded_layout_text(spec)}, S={s} M={m}",
            f"{r['rate']:,.0f} deliveries/s; latency p50/p95/p99 {r['p50']:.2f}/{r['p95']:.2f}/{r['p99']:.2f}s; "
            f"missing {r['missing']}, dup {r['duplicates']} ({r['ended']}); {cpu_text(r['cpu'])}",
            ">=300/s, 0 missing, 0 dup",
            "ok" if ok else "MISS",
        )

    @staticmethod
    def embedded_layout_text(spec: str) -> str:
        if spec == PROCFILE_LAYOUT:
            return f"the Procfile's worker (`worker {' '.join(procfile_worker_args())}`)"
        return spec

    # -- scenario 8: latency on an idle hub --

    def latency_run(self, *, spec: str, env: dict, web_url: str, embedded: bool, loglevel: str | None) -> dict:
        """One subscriber; publishes one at a time, each after the previous arrived and a pause."""
        tries, pause = self.args.latency_tries, LATENCY_PAUSE_SECONDS
        self.dbtool(env, "reset")
        if not embedded:
            self.flush_redis()
        self.sink.reset()
        topic = "BENCH.LATENCY.topic"
        self.dbtool(env, "seed", "--topic", topic, "--count", "1", "--base", self.sink.url)
        workers = self.start_workers("websubhub", spec, env, loglevel=loglevel, embedded=embedded)
        latencies, answers, missing, received = [], [], 0, 0
        url, headers = f"{web_url}/api/notifications/", self.headers[web_url]
        try:
            time.sleep(LATENCY_SETTLE_SECONDS)  # an idle hub: nothing left over from starting up
            for seq in range(tries):
                sent = time.time()
                http_json(url, {"topic": topic, "content": {"seq": seq, "t": sent}}, headers=headers)
                answers.append(time.time() - sent)
                stats = http_json(f"{self.sink.url}/_bench/wait?posts={received + 1}&timeout={LATENCY_TIMEOUT}")
                received = stats["posts"]
                # Only this publish's own arrival counts (a late one of an earlier publish does not).
                if stats["last_body"] and json.loads(stats["last_body"]).get("seq") == seq:
                    latencies.append(stats["last"] - sent)
                else:
                    missing += 1
                time.sleep(pause)
        finally:
            self.stop_workers(workers)
        return {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies, default=float("nan")),
            "publish_p50": percentile(answers, 50),
            "arrived": len(latencies),
            "missing": missing,
            "latencies": latencies,
        }

    def latency(self) -> None:
        spec = self.args.latency_pool
        r = self.latency_run(
            spec=spec,
            env=self.hub_env(),
            web_url=f"http://127.0.0.1:{self.web_port}",
            embedded=False,
            loglevel=None,
        )
        self.details["latency"] = r
        self.latency_row(f"PostgreSQL + Redis, {self.describe(spec)}", r, 0.050)

    def latency_embedded(self) -> None:
        spec = self.args.embedded_pool
        with self.embedded_hub() as (env, web_url, _web):
            r = self.latency_run(spec=spec, env=env, web_url=web_url, embedded=True, loglevel="INFO")
        self.details["latency embedded"] = r
        self.latency_row(f"SQLite + filesystem broker, {self.embedded_layout_text(spec)}", r, 0.500)

    def latency_row(self, setup: str, r: dict, target: float) -> None:
        tries = r["arrived"] + r["missing"]
        self.row(
            "8 latency",
            f"{setup}; 1 subscriber, {tries} publishes one at a time ({LATENCY_PAUSE_SECONDS * 1000:.0f} ms apart)",
            f"publish to arrival p50/p95/max {r['p50'] * 1000:.0f}/{r['p95'] * 1000:.0f}/{r['max'] * 1000:.0f} ms "
            f"(publish answered p50 {r['publish_p50'] * 1000:.0f} ms); missing {r['missing']}",
            f"p50 <{target * 1000:.0f} ms",
            "ok" if r["p50"] < target and r["missing"] == 0 else "MISS",
        )

    # -- scenario 9: deliveries waiting for their retry --

    def broker_state(self) -> dict:
        """Redis used_memory, and the hub's delivery messages in the broker: queued (lists) and unacked (held)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        queued, unacked = 0, 0
        for key in client.scan_iter(count=1000):
            name = key.decode("utf-8", "replace")
            kind = client.type(key)
            if kind == b"list" and name.startswith(DELIVER_QUEUE_PREFIX):
                queued += client.llen(key)
            elif kind == b"hash" and name == "unacked":
                for value in client.hvals(key):
                    with contextlib.suppress(ValueError, IndexError, TypeError):
                        unacked += json.loads(value)[2].startswith(DELIVER_QUEUE_PREFIX)
        return {"used_memory": int(client.info("memory")["used_memory"]), "queued": queued, "unacked": unacked}

    def waiting(self) -> None:
        n, subs, due_in = self.args.waiting, self.args.waiting_subscriptions, self.args.waiting_due
        spec = self.args.waiting_pool
        env = self.hub_env()
        self.dbtool(env, "reset")
        self.flush_redis()
        self.sink.reset()
        for schedule in self.var_dir.glob("celerybeat-schedule*"):
            schedule.unlink()
        # The hub has been running and its broker kept its data: with the broker's marker set, beat's first
        # sweep does not take the flushed Redis for a lost broker and re-send every pending delivery.
        self.dbtool(env, "sweep")
        before = self.broker_state()
        self.log(f"waiting: {n:,} deliveries on {subs:,} subscriptions (COPY)")
        seed_args = ["--count", str(n), "--subscriptions", str(subs), "--base", self.sink.url]
        seeded = self.dbtool(env, "waiting-seed", *seed_args)
        workers = self.start_workers("websubhub", spec, env, extra=("--beat",))
        mb = 1024 * 1024
        try:
            with RssSampler({"worker": [w.pid for w in workers]}) as rss:
                ready_rss = RssSampler._rss([w.pid for w in workers])
                due = self.dbtool(env, "waiting-due", "--seconds", str(due_in))["due"]
                # Sample while they wait, up to shortly before due (an enqueue may rightly run a little ahead).
                samples = []
                while time.time() < due - WAITING_SAMPLE_MARGIN:
                    samples.append({**self.broker_state(), "rss": RssSampler._rss([w.pid for w in workers])})
                    time.sleep(1.0)
                time.sleep(max(0.0, due - time.time()))
                stats = self.sink.wait_for(n, self.args.waiting_max_wait)
            records = self.sink.records()
            after = self.broker_state()
        finally:
            self.stop_workers(workers)
        waited = {
            "rss": max((x["rss"] for x in samples), default=0),
            "used_memory": max((x["used_memory"] for x in samples), default=0),
            "queued": max((x["queued"] for x in samples), default=0),
            "unacked": max((x["unacked"] for x in samples), default=0),
        }
        arrivals: dict[str, float] = {}
        repeated: dict[str, list[float]] = {}
        for r in records:
            if r["d"] in arrivals:
                repeated.setdefault(r["d"], [arrivals[r["d"]]]).append(r["t"])
            arrivals.setdefault(r["d"], r["t"])
        delays = [t - due for t in arrivals.values()]
        early = sum(1 for d in delays if d < 0)
        missing = n - len(arrivals)
        duplicates = len(records) - len(arrivals)
        all_sent = f"{max(delays):.1f}s" if delays and not missing else f"not within {stats['ended']}"
        growth = (waited["rss"] - ready_rss) / mb
        held = waited["queued"] + waited["unacked"]
        self.details["waiting"] = {
            "seeded": seeded,
            "before": before,
            "ready_rss": ready_rss,
            "samples": samples,
            "after": after,
            "rss_peak": rss.peak,
            "due": due,
            "stats": stats,
            "missing": missing,
            "duplicates": duplicates,
            # Delivery ids received more than once, with their arrival times (seconds since the epoch):
            # the attempt log tells a retry after a timeout from a second run of one attempt.
            "repeated": dict(list(repeated.items())[:50]),
            "early": early,
        }
        ok = held == 0 and growth < 50 and missing == 0 and duplicates == 0 and early == 0
        self.row(
            "9 waiting",
            f"{n:,} deliveries waiting for retry (attempts=1, queued=False) to {subs:,} subscriptions, due "
            f"{due_in:g}s after {self.describe(spec)} --beat is ready",
            f"while waiting ({len(samples)} samples): worker RSS {waited['rss'] / mb:.0f} MB (+{growth:.0f} since "
            f"ready), Redis used_memory {waited['used_memory'] / mb:.1f} MB "
            f"({(waited['used_memory'] - before['used_memory']) / mb:+.1f}), delivery messages in the broker "
            f"{waited['queued']} queued + {waited['unacked']} unacked; from due: all sent in {all_sent}, "
            f"arrival - due_at p50/p99 {percentile(delays, 50):.1f}/{percentile(delays, 99):.1f}s; "
            f"missing {missing}, dup {duplicates}, early {early} ({stats['ended']}); "
            f"worker RSS peak while sending {rss.peak['worker'] / mb:.0f} MB",
            "0 delivery messages in the broker while waiting, worker +<50MB, 0 missing/dup/early",
            "ok" if ok else "MISS",
        )

    # -- scenario 10: purge while delivering --

    def purge_load_run(self, *, spec: str, env: dict, topic: str, purge: bool) -> dict:
        """Steady e2e load; the window is the purge's run (purge=True) or --purge-baseline-seconds (False).

        The purge is `dbtool.py purge` (services.retention_purge, as hub_purge runs
        it) in its own process, started once the load is warm. After the window the
        load stops and every delivery it owed is waited for (missing, duplicates).
        """
        s = self.args.subscribers
        self.flush_redis()
        self.sink.reset()
        workers = self.start_workers("websubhub", spec, env)
        web_url = f"http://127.0.0.1:{self.web_port}"
        load = SteadyLoad(
            url=f"{web_url}/api/notifications/",
            topic=topic,
            subscribers=s,
            sink=self.sink,
            headers=self.headers[web_url],
            concurrency=self.args.publish_concurrency_e2e,
        )
        purge_result: dict = {}
        groups = self.cpu_groups(workers, self.web, embedded=False)
        purger: subprocess.Popen | None = None
        groups["purge"] = lambda: process_tree([purger.pid]) if purger is not None else []
        try:
            load.start()
            time.sleep(PURGE_WARMUP_SECONDS)
            with PgActivity(self.database_url) as activity, CpuMeter(groups) as meter:
                if purge:
                    command = [PY, str(BENCH / "dbtool.py"), "purge"]
                    if self.args.purge_batch:
                        command += ["--batch", str(self.args.purge_batch)]
                    log = OUT / "purge.log"
                    offset = log.stat().st_size if log.exists() else 0
                    purger = PROCS.start("purge", command, {**env, "PGAPPNAME": PURGE_APP_NAME})
                    deadline = time.monotonic() + self.args.purge_max_wait
                    while purger.poll() is None and time.monotonic() < deadline:
                        time.sleep(POLL_SECONDS)
                    if purger.poll() is None:
                        PROCS.stop(purger)
                        raise RuntimeError(f"the purge did not end within --purge-max-wait {self.args.purge_max_wait}s")
                    PROCS.stop(purger)
                    with log.open("rb") as f:
                        f.seek(offset)
                        lines = [line for line in f.read().decode().splitlines() if line.startswith("{")]
                    if purger.returncode != 0 or not lines:
                        raise RuntimeError(f"the purge exited with {purger.returncode}; see bench/out/purge.log")
                    purge_result = json.loads(lines[-1])
                    window = (purge_result["start"], purge_result["end"])
                else:
                    start = time.time()
                    time.sleep(self.args.purge_baseline_seconds)
                    window = (start, time.time())
            load.stop()
            owed = load.accepted() * s
            stats = self.sink.wait_for(owed, self.args.max_wait)
            records = self.sink.records()
        finally:
            with contextlib.suppress(RuntimeError):
                load.stop()
            self.stop_workers(workers)
        in_window = sum(1 for r in records if window[0] <= r["t"] <= window[1])
        pairs = Counter((r["p"], json.loads(r["b"])["seq"]) for r in records)
        expected = {(f"/cb/{i}", r[0]) for i in range(s) for r in load.results if r[1] == 202}
        seconds = max(1e-9, window[1] - window[0])
        return {
            "window_s": seconds,
            "delivered_in_window": in_window,
            "rate": in_window / seconds,
            "published": len(load.results),
            "refused": dict(Counter(r[1] for r in load.results if r[1] != 202)),
            "expected": len(expected),
            "missing": len(expected - set(pairs)),
            "duplicates": sum(c - 1 for c in pairs.values()),
            "ended": stats["ended"],
            "purge": purge_result,
            "activity": activity.result(),
            "cpu_raw": meter.result,
        }

    def purge(self) -> None:
        n, fanout, spec = self.args.purge_rows, self.args.purge_fanout, self.args.purge_pool
        env = self.hub_env()
        topic = "BENCH.PURGE.topic"
        self.dbtool(env, "reset")
        self.dbtool(env, "seed", "--topic", topic, "--count", str(self.args.subscribers), "--base", self.sink.url)
        self.log(f"purge: {n:,} settled deliveries past retention, {fanout} per notification (INSERT ... SELECT)")
        seeded = self.dbtool(env, "purge-seed", "--count", str(n), "--fanout", str(fanout), "--base", self.sink.url)
        self.log(f"purge: seeded in {seeded['seconds']:.1f}s; the load without purge")
        before = self.purge_load_run(spec=spec, env=env, topic=topic, purge=False)
        self.log("purge: the load while the purge runs")
        during = self.purge_load_run(spec=spec, env=env, topic=topic, purge=True)
        left = self.dbtool(env, "deliveries")
        # Without purge once before and once after it, so that drift on a shared machine hits both sides alike.
        self.log("purge: the load without purge, again")
        after = self.purge_load_run(spec=spec, env=env, topic=topic, purge=False)
        runs = {"before": before, "during": during, "after": after}
        self.details["purge"] = {"seeded": seeded, **runs, "left": left}
        purged = during["purge"]
        removed, purge_seconds, batches = purged["counts"], purged["seconds"], purged["batch_seconds"]
        without = statistics.mean([before["rate"], after["rate"]])
        ratio = during["rate"] / without if without else float("nan")
        activity, longest = during["activity"], during["activity"]["longest"]
        missing = sum(r["missing"] for r in runs.values())
        duplicates = sum(r["duplicates"] for r in runs.values())
        refused_n = sum(sum(r["refused"].values()) for r in runs.values())

        def cores(run: dict, group: str | None = None) -> float:
            """Cores busy over the run's window: the machine's, or one group's."""
            cpu = run["cpu_raw"]
            used = cpu["machine_s"] if group is None else cpu["groups_s"].get(group, 0.0)
            return used / max(1e-9, cpu["wall_s"])

        self.row(
            "10 purge",
            f"{seeded['deliveries']:,} settled deliveries past retention ({seeded['notifications']:,} notifications, "
            f"{seeded['attempts']:,} attempts; seeded in {seeded['seconds']:.0f}s); purge batch "
            f"{purged['batch']} rows/statement, {purged['notification_batch']} notifications/round, own process; "
            f"load: {self.describe(spec)}, S={self.args.subscribers}, >={PURGE_BACKLOG} deliveries owed",
            f"purge {removed['deliveries'] / purge_seconds:,.0f} deliveries/s ({removed['deliveries']:,} in "
            f"{purge_seconds:.1f}s; {purged['rows']:,} rows in all, {len(batches)} batches, batch "
            f"p50/max {percentile(batches, 50):.2f}/{max(batches, default=0):.2f}s); deliveries "
            f"{during['rate']:,.0f}/s during the purge vs {without:,.0f}/s without ({ratio:.2f}x; without: "
            f"{before['rate']:,.0f}/s before, {after['rate']:,.0f}/s after); cores busy {cores(during):.2f} vs "
            f"{cores(before):.2f}/{cores(after):.2f}: purge process {cores(during, 'purge'):.2f}, postgres "
            f"{cores(during, 'postgres'):.2f} vs {cores(before, 'postgres'):.2f}/{cores(after, 'postgres'):.2f}, "
            f"worker {cores(during, 'worker'):.2f} vs {cores(before, 'worker'):.2f}/{cores(after, 'worker'):.2f}; "
            f"hub waiting on a lock in {activity['hub_lock_wait_samples']}/{activity['samples']} samples of "
            f"pg_stat_activity; longest statement seen: purge {longest.get('purge', {}).get('seconds', 0):.2f}s, "
            f"hub {longest.get('hub', {}).get('seconds', 0):.2f}s; missing {missing}, dup {duplicates}"
            f"{f', {refused_n} publishes refused' if refused_n else ''}",
            "report; all purged, 0 missing/dup",
            "ok" if missing == 0 and duplicates == 0 and removed["deliveries"] == seeded["deliveries"] else "MISS",
        )
        if missing or duplicates:
            self.notes.append("purge: the load ended " + ", ".join(f"{n} {r['ended']}" for n, r in runs.items()))
        self.dbtool(env, "reset")

    # -- all --

    def run(self) -> None:
        self.setup()
        pools = self.args.pools
        chosen = self.args.scenarios
        steps = []
        for spec in pools:
            if "ceiling" in chosen:
                steps.append((f"ceiling {spec}", lambda spec=spec: self.ceiling(spec)))
            if "e2e" in chosen:
                steps.append((f"e2e {spec}", lambda spec=spec: self.e2e(spec)))
        if "isolation" in chosen:
            for spec in self.args.isolation_pools or pools:
                steps.append((f"isolation {spec}", lambda spec=spec: self.isolation(spec)))
        if "fanout" in chosen:
            fanout_pool = self.args.fanout_pool or (DEFAULT_LAYOUT if DEFAULT_LAYOUT in pools else pools[0])
            steps.append(("fanout", lambda: self.fanout(fanout_pool)))
        if "publish" in chosen:
            steps.append(("publish", self.publish_throughput))
        if "latency" in chosen:
            steps.append(("latency", self.latency))
            steps.append(("latency embedded", self.latency_embedded))
        if "matching" in chosen:
            steps.append(("matching", self.matching))
        if "embedded" in chosen:
            steps.append(("embedded", self.embedded))
        if "waiting" in chosen:
            steps.append(("waiting", self.waiting))
        if "purge" in chosen:
            steps.append(("purge", self.purge))
        for name, step in steps:
            self.log(f"--- {name}")
            started = time.monotonic()
            try:
                step()
            except Exception as exc:  # one broken scenario must not hide the others' figures
                text = str(exc).strip()
                self.row(name, "", f"ERROR: {text.splitlines()[-1][:300] if text else type(exc).__name__}", "", "ERROR")
                self.log(f"{name} failed: {exc!r}")
            self.log(f"--- {name}: {time.monotonic() - started:.1f}s")


# --- Reporting ---------------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Python {platform.python_version()}"


def commit() -> str:
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!bench", ":!requirements-bench.txt"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + (" + uncommitted changes" if dirty else "")


def report(bench: Bench, argv: list[str], seconds: float) -> str:
    header = (
        f"## {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · commit {commit()} · {machine()}\n\n"
        f"`bench/run {' '.join(argv)}` ({seconds:.0f}s). Worker log level {bench.args.worker_loglevel}, "
        f"HUB_LOG_LEVEL {bench.args.hub_log_level}; PostgreSQL, Redis, the sink, gunicorn and the workers "
        "share the cores.\n"
    )
    lines = ["| scenario | setup | result | target | |", "|---|---|---|---|---|"]
    for row in bench.rows:
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    text = header + "\n" + "\n".join(lines) + "\n"
    for note in bench.notes:
        text += "\n" + note + "\n"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, the default layout only: a few minutes")
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    parser.add_argument(
        "--pools",
        default=None,
        help="worker layouts, e.g. prefork:8,threads:32x2 (pool:concurrency[xinstances]); `default` is the hub's "
        "own defaults (no -P/-c); full run: threads:4,prefork:4,default",
    )
    parser.add_argument("--isolation-pools", default=None, help="layouts of the isolation runs (default: --pools)")
    parser.add_argument("--fanout-pool", default=None, help="layout of the fan-out run (default: `default`)")
    parser.add_argument("--latency-pool", default=DEFAULT_LAYOUT, help="layout of the PostgreSQL latency run")
    parser.add_argument("--latency-tries", type=int, default=None, help="latency: publishes, one at a time")
    parser.add_argument("--waiting", type=int, default=None, help="waiting: deliveries waiting for their retry")
    parser.add_argument("--waiting-subscriptions", type=int, default=None, help="waiting: subscriptions they owe")
    parser.add_argument("--waiting-due", type=float, default=None, help="waiting: seconds from worker ready to due")
    parser.add_argument("--waiting-pool", default=DEFAULT_LAYOUT, help="waiting: worker layout (started with -B)")
    parser.add_argument("--waiting-max-wait", type=float, default=None, help="waiting: longest wait for all (s)")
    parser.add_argument("--purge-rows", type=int, default=None, help="purge: settled deliveries past retention")
    parser.add_argument("--purge-fanout", type=int, default=10, help="purge: seeded deliveries per notification")
    parser.add_argument("--purge-batch", type=int, default=None, help="purge: rows/statement (default: the hub's)")
    parser.add_argument("--purge-pool", default=DEFAULT_LAYOUT, help="purge: worker layout of the load")
    parser.add_argument("--purge-baseline-seconds", type=float, default=None, help="purge: window without purge")
    parser.add_argument("--purge-max-wait", type=float, default=None, help="purge: longest wait for the purge (s)")
    parser.add_argument("--subscribers", type=int, default=None, help="e2e: subscribers on the topic")
    parser.add_argument("--notifications", type=int, default=None, help="e2e: notifications published")
    parser.add_argument("--ceiling-tasks", type=int, default=None)
    parser.add_argument("--fanout", type=int, default=None, help="subscribers of the fan-out notification")
    parser.add_argument("--match-subscriptions", type=int, default=None)
    parser.add_argument("--match-topics-per-sub", type=float, default=0.1, help="distinct topics per subscription")
    parser.add_argument("--publish-requests", type=int, default=None)
    parser.add_argument("--publish-concurrency", type=int, default=32)
    parser.add_argument("--publish-rounds", type=int, default=None, help="publish: alternating hub/baseline rounds")
    parser.add_argument("--publish-concurrency-e2e", type=int, default=8)
    parser.add_argument("--iso-subscribers", type=int, default=None)
    parser.add_argument("--iso-notifications", type=int, default=None)
    parser.add_argument("--hang-timeout", type=float, default=2.0, help="HUB_HTTP_READ_TIMEOUT in isolation")
    parser.add_argument("--embedded-subscribers", type=int, default=None)
    parser.add_argument("--embedded-notifications", type=int, default=None)
    parser.add_argument(
        "--embedded-pool", default=PROCFILE_LAYOUT, help="embedded layout; `procfile`: the Procfile's worker line"
    )
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--worker-loglevel", default="WARNING")
    parser.add_argument("--hub-log-level", default="INFO", help="HUB_LOG_LEVEL of web and workers (project default)")
    parser.add_argument("--max-wait", type=float, default=None, help="longest wait for one run's deliveries (s)")
    parser.add_argument("--database", default="websubhub_bench")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument(
        "--profile",
        nargs="?",
        const="cpu",
        choices=["cpu", "idle", "gil"],
        default=None,
        help="py-spy the workers of e2e runs and the web of the first publish round into bench/out/profile-*.txt: "
        "cpu samples (threads not idle), idle "
        "too, or gil (only the thread holding the GIL: where the Python work goes)",
    )
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    quick = args.quick
    defaults = {
        "pools": DEFAULT_LAYOUT if quick else f"threads:4,prefork:4,{DEFAULT_LAYOUT}",
        "subscribers": 20 if quick else 100,
        "notifications": 30 if quick else 100,
        "ceiling_tasks": 1000 if quick else 10000,
        "fanout": 500 if quick else 10000,
        "match_subscriptions": 20000 if quick else 1_000_000,
        "publish_requests": 300 if quick else 3000,
        "publish_rounds": 1 if quick else 4,
        "iso_subscribers": 20 if quick else 50,
        "iso_notifications": 10 if quick else 100,
        "embedded_subscribers": 10 if quick else 20,
        "embedded_notifications": 10 if quick else 50,
        "max_wait": 60 if quick else 300,
        "latency_tries": 20 if quick else 50,
        "waiting": 2000 if quick else 100_000,
        "waiting_subscriptions": 100 if quick else 1000,
        "waiting_due": 10 if quick else 30,
        "waiting_max_wait": 120 if quick else 900,
        "purge_rows": 20_000 if quick else 1_000_000,
        "purge_baseline_seconds": 10 if quick else 30,
        "purge_max_wait": 600 if quick else 3600,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.pools = [p for p in args.pools.split(",") if p]
    if args.isolation_pools:
        args.isolation_pools = [p for p in args.isolation_pools.split(",") if p]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.purge_rows < 1 or args.purge_fanout < 1 or (args.purge_batch is not None and args.purge_batch < 1):
        parser.error("--purge-rows, --purge-fanout and --purge-batch must be at least 1")
    unknown = set(args.scenarios) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    bench = Bench(args)
    started = time.monotonic()
    try:
        bench.run()
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        PROCS.stop_all()
    text = report(bench, sys.argv[1:], time.monotonic() - started)
    print()
    print(text)
    (OUT / "details.json").write_text(json.dumps(bench.details, indent=1, default=str))
    if not args.no_results:
        results = BENCH / "RESULTS.md"
        if not results.exists():
            results.write_text(
                "# Benchmark results\n\nAppended by `bench/run` (newest last); see bench/README.md for what each "
                "scenario measures.\n\n"
            )
        with results.open("a") as f:
            f.write("\n" + text)
        print(f"appended to {results.relative_to(ROOT)}; raw figures in bench/out/details.json")


if __name__ == "__main__":
    main()
