"""gunicorn.conf.py: each hub's web server keeps its control socket under its own var directory; access lines."""

import json
import os
import stat
import subprocess
from pathlib import Path
from urllib.request import Request, urlopen

import pytest
from gunicorn.ctl.client import ControlClient

from tests.support.auth import token_for
from tests.support.factories import SubscriptionFactory
from tests.support.processes import (
    GUNICORN,
    WorkerProcess,
    _database_url,
    answers,
    free_port,
    gunicorn_serving,
    queue_drain,
)
from tests.support.subscriber import Subscriber, wait_until
from websubhub.queues import QueueName

ROOT = Path(__file__).resolve().parents[2]


def _is_socket(path: Path) -> bool:
    return path.exists() and stat.S_ISSOCK(path.stat().st_mode)


def test_two_hubs_on_one_machine_keep_separate_control_sockets_under_their_var_dirs(tmp_path: Path) -> None:
    # given two web servers of one user, started as the Procfile starts them, each with its own HUB_VAR_DIR
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
    env["HOME"] = str(home)
    hubs = []
    try:
        for name in ("one", "two"):
            port = free_port()
            var_dir = tmp_path / name
            log = (tmp_path / f"{name}.log").open("wb")
            command = [*GUNICORN, "--bind", f"127.0.0.1:{port}", "--workers", "1"]
            process = subprocess.Popen(
                command, cwd=ROOT, env={**env, "HUB_VAR_DIR": str(var_dir)}, stdout=log, stderr=subprocess.STDOUT
            )
            hubs.append((process, port, var_dir / "gunicorn.ctl", log))
        # when both serve
        for _, port, control, _ in hubs:
            wait_until(lambda port=port: answers(f"http://127.0.0.1:{port}/healthz"), timeout=30, what="gunicorn")
            wait_until(lambda control=control: _is_socket(control), timeout=30, what=f"the control socket {control}")
        # then each answers on its own socket, about its own listener, and none took the per-user default
        for _, port, control, _ in hubs:
            with ControlClient(str(control), timeout=10) as client:
                listeners = client.send_command("show listeners")["listeners"]
            assert [listener["address"] for listener in listeners] == [f"http://127.0.0.1:{port}"]
        assert not (home / ".gunicorn").exists()
    finally:
        for process, _, _, log in hubs:
            process.terminate()
            process.wait(timeout=20)
            log.close()


def test_without_access_logfile_gunicorn_writes_no_access_lines(tmp_path: Path) -> None:
    # given the web server started without --access-logfile (bench/run does)
    log_path = tmp_path / "web.log"
    with (
        log_path.open("wb") as log,
        gunicorn_serving("--no-control-socket", env=os.environ, stdout=log, stderr=subprocess.STDOUT) as url,
    ):
        # when it serves requests
        answers(f"{url}/healthz")
    # then it logged its own lines but none for the requests
    text = log_path.read_text()
    assert "gunicorn.error" in text
    assert "GET /healthz" not in text
    assert "gunicorn.access" not in text


@pytest.mark.e2e
def test_a_publish_through_the_web_server_goes_to_spread_from_its_sender_thread_even_as_it_stops(
    hub: WorkerProcess, subscriber: Subscriber, tmp_path: Path
) -> None:
    # given a subscription, a publishing token, and no worker to take the spread queue's messages
    SubscriptionFactory(topic="UN.CEFACT.*", callback=subscriber.url("/web"))
    token = token_for("web-publisher", publish=True)
    hub.stop()
    queue_drain(QueueName.SPREAD)
    # when three notifications are published through the web server (gunicorn.conf.py), which then stops
    env = {**os.environ, "DATABASE_URL": _database_url()}
    with (
        (tmp_path / "web.log").open("wb") as log,
        gunicorn_serving("--no-control-socket", env=env, stdout=log, stderr=subprocess.STDOUT) as url,
    ):
        ids = []
        for n in range(3):
            body = json.dumps({"topic": "UN.CEFACT.TRADE", "content": {"n": n}}).encode()
            request = Request(
                f"{url}/api/notifications/",
                data=body,
                headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            )
            with urlopen(request, timeout=10) as response:
                assert response.status == 202
                ids.append(json.load(response)["id"])
    # then its sender thread sent one spread message each before the process ended
    messages = queue_drain(QueueName.SPREAD, requeue=True)
    assert sorted(m.decode()[1]["notification_id"] for m in messages) == sorted(ids)
    # and a worker spreads and delivers them
    hub.ensure_running()
    got = wait_until(lambda: len(subscriber.deliveries("/web")) >= 3 and subscriber.deliveries("/web"))
    assert sorted(json.loads(d.body)["n"] for d in got) == [0, 1, 2]
