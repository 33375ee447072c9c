"""docker-compose.yml and the README's worker examples agree with the settings (Docker itself cannot run here)."""

import re
import shlex
from pathlib import Path

import yaml

from websubhub.queues import ALL_QUEUES

ROOT = Path(__file__).resolve().parents[2]
WORKER_COMMAND = re.compile(r"celery -A websubhub worker[^\n&|;`]*")


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _command_text(service: dict) -> str:
    command = service.get("command") or ""
    return " ".join(command) if isinstance(command, list) else command


def _option(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                return args[index + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def test_compose_workers_each_have_a_node_name_and_together_consume_every_queue_once() -> None:
    # given the compose file's worker services
    services = _compose()["services"]
    workers = {name: _command_text(s) for name, s in services.items() if WORKER_COMMAND.search(_command_text(s))}
    assert len(workers) >= 2, workers
    names, queues, beats = [], [], 0
    for service_name, text in workers.items():
        args = shlex.split(WORKER_COMMAND.search(text).group(0))
        # then each has its own node name, and its healthcheck pings that node
        node = _option(args, "-n", "--hostname")
        assert node and node.endswith("@%h"), (service_name, args)
        names.append(node.split("@")[0])
        health = " ".join(services[service_name]["healthcheck"]["test"])
        assert f"--destination {node.split('@')[0]}@$$HOSTNAME" in health, (service_name, health)
        worker_queues = _option(args, "-Q", "--queues")
        assert worker_queues, (service_name, args)
        queues += worker_queues.split(",")
        beats += any(arg in ("-B", "--beat") for arg in args)
    beats += sum(1 for s in services.values() if re.search(r"celery -A websubhub beat", _command_text(s)))
    assert len(set(names)) == len(names), names
    # and every queue the settings route to has exactly one kind of worker, with exactly one beat
    assert sorted(queues) == sorted(ALL_QUEUES)
    assert beats == 1


def test_compose_offers_rabbitmq_as_an_optional_profile_that_every_hub_service_can_use() -> None:
    services = _compose()["services"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    hub_services = [name for name, s in services.items() if s.get("image") == "websubhub:latest"]
    assert {"web", "worker", "flower"} <= set(hub_services)
    for name in hub_services:
        assert "CELERY_BROKER_URL" in services[name]["environment"], name
        # Optional: the stack without the profile still starts.
        assert services[name]["depends_on"]["rabbitmq"]["required"] is False, name


def test_the_readme_example_of_splitting_queues_names_each_worker() -> None:
    readme = (ROOT / "README.md").read_text()
    # The command lines of its code blocks (a line that starts with the command).
    examples = [line.strip() for line in readme.splitlines() if re.match(r"\s*celery -A websubhub worker .*-Q ", line)]
    assert len(examples) >= 2, examples
    names = [_option(shlex.split(example), "-n", "--hostname") for example in examples]
    assert all(names), examples
    assert len(set(names)) == len(names), names
