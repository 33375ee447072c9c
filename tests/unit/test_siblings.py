"""The command line a sibling worker gets: the first's options, its own node name, no beat and no pidfile."""

import sys

import pytest

from websubhub.siblings import sibling_command


@pytest.mark.parametrize(
    "argv",
    [
        ["celery", "-A", "websubhub", "worker", "-B", "-c", "8", "-Q", "hub.deliver", "-n", "deliver@box"],
        ["celery", "-A", "websubhub", "worker", "--beat", "-c", "8", "-Q", "hub.deliver", "--hostname=deliver@box"],
        ["celery", "-A", "websubhub", "worker", "-c", "8", "-Q", "hub.deliver", "-ndeliver@box", "--pidfile=/run/w"],
        ["celery", "-A", "websubhub", "worker", "-s", "/var/beat", "-c", "8", "-Q", "hub.deliver", "--detach"],
    ],
)
def test_a_sibling_keeps_the_options_and_gets_its_own_name(argv: list[str]) -> None:
    command = sibling_command(argv, hostname="deliver@box", number=3)
    assert command == [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "websubhub",
        "worker",
        "-c",
        "8",
        "-Q",
        "hub.deliver",
        "--hostname",
        "deliver-3@box",
    ]
