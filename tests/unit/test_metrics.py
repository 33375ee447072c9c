"""GET /metrics: counters from services, state gauges, the token, and worker counters through multiprocess mode."""

import contextlib
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.request import Request, urlopen

import pytest
from django.conf import settings
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from subscriptions import delivery, health, metrics, services, verification
from subscriptions.metrics import collectors
from subscriptions.models import Notification, Subscription
from tests.support.auth import api_client
from tests.support.factories import DeliveryFactory, SubscriptionFactory, SubscriptionRequestFactory
from tests.support.subscriber import Subscriber, wait_until
from websubhub.queues import ALL_QUEUES

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(client: Client | None = None, **headers: str) -> Samples:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return _parse(response.content.decode())


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _delivered(samples: Samples) -> float:
    return _value(samples, "websubhub_deliveries_total", outcome="delivered")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Unit: services count, /metrics shows ---------------------------------------------------


def test_metrics_dir_is_under_the_var_dir_and_set_for_prometheus_client() -> None:
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(settings.HUB_METRICS_DIR)
    assert settings.HUB_METRICS_DIR.is_dir()
    if "HUB_METRICS_DIR" not in os.environ:
        assert settings.HUB_METRICS_DIR == settings.VAR_DIR / "metrics"


def test_metrics_dir_defaults_to_metrics_under_the_var_dir(tmp_path: Path) -> None:
    # (scripts/test gives each run a HUB_METRICS_DIR of its own, so the default is checked in a fresh process)
    env = {k: v for k, v in os.environ.items() if k not in ("HUB_METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR")}
    env["HUB_VAR_DIR"] = str(tmp_path)
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            # (a process's start, not the import of settings, makes the directory: django.setup())
            "import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'websubhub.settings'); "
            "django.setup(); from django.conf import settings; "
            "print(settings.HUB_METRICS_DIR); print(os.environ['PROMETHEUS_MULTIPROC_DIR'])",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [str(tmp_path / "metrics")] * 2
    assert (tmp_path / "metrics").is_dir()


@pytest.mark.django_db
def test_metrics_serves_prometheus_text_with_every_metric_and_label() -> None:
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "no-cache" in response["Cache-Control"]
    samples = _parse(response.content.decode())
    names = {name for name, _ in samples}
    for name in (
        "websubhub_notifications_accepted_total",
        "websubhub_delivery_latency_seconds_count",
        "websubhub_delivery_attempt_duration_seconds_count",
    ):
        assert name in names
    for outcome in metrics.DELIVERY_OUTCOMES:
        assert ("websubhub_deliveries_total", (("outcome", outcome),)) in samples
    for outcome in metrics.VERIFICATION_OUTCOMES:
        assert ("websubhub_verifications_total", (("outcome", outcome),)) in samples
    for queue in ALL_QUEUES:
        assert ("websubhub_queue_depth", (("queue", queue),)) in samples


def test_metrics_answers_openmetrics_when_asked(db: None) -> None:
    response = Client().get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


@pytest.mark.django_db
def test_outcomes_are_counted_alike_whether_given_as_the_enum_or_as_its_plain_string() -> None:
    before = _scrape()
    metrics.delivery_outcome(metrics.DeliveryOutcome.PARKED)
    metrics.delivery_outcome("parked")
    metrics.verification_outcome(metrics.VerificationOutcome.DENIED)
    metrics.verification_outcome("denied")
    after = _scrape()
    assert _value(after, "websubhub_deliveries_total", outcome="parked") == (
        _value(before, "websubhub_deliveries_total", outcome="parked") + 2
    )
    assert _value(after, "websubhub_verifications_total", outcome="denied") == (
        _value(before, "websubhub_verifications_total", outcome="denied") + 2
    )
    assert tuple(metrics.DeliveryOutcome) == metrics.DELIVERY_OUTCOMES
    with pytest.raises(ValueError):
        metrics.delivery_outcome("misspelt")


@pytest.mark.django_db
def test_publishing_a_notification_increments_notifications_accepted() -> None:
    before = _value(_scrape(), "websubhub_notifications_accepted_total")
    # (the spread is enqueued on commit, which a `db` test never reaches: no broker involved)
    services.notification_publish(topic="orders.created", content=b"{}", content_type="application/json")
    services.notification_publish(topic="orders.created", content=b"{}", content_type="application/json")
    assert _value(_scrape(), "websubhub_notifications_accepted_total") == before + 2


@pytest.mark.django_db
def test_a_second_test_run_in_the_same_checkout_leaves_this_runs_metric_files_alone() -> None:
    # given a count this process wrote to its metric file
    services.notification_publish(topic="metrics.second-run", content=b"{}", content_type="application/json")
    before = _value(_scrape(), "websubhub_notifications_accepted_total")
    assert before >= 1
    # when a second scripts/test starts in this checkout, as from another shell (collect-only: it runs no test).
    # scripts/test used to empty $HUB_VAR_DIR/metrics, which is this run's directory too: this process's
    # file was unlinked while it kept counting into it, and /metrics lost its counts for good.
    env = {k: v for k, v in os.environ.items() if k not in ("HUB_METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR")}
    second = subprocess.run(
        [str(ROOT / "scripts" / "test"), "-p", "no:cacheprovider", "--collect-only", "-q", "tests/unit/test_topics.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    # then this run's counters still show on /metrics
    assert _value(_scrape(), "websubhub_notifications_accepted_total") == before


@pytest.mark.django_db
def test_a_delivered_attempt_counts_the_outcome_the_latency_and_the_attempt_duration(
    monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    # given a pending delivery whose notification was published a minute ago
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    row = DeliveryFactory()
    Notification.objects.filter(pk=row.notification_id).update(created_at=timezone.now() - timedelta(seconds=60))
    monkeypatch.setattr(delivery, "post", lambda *args: delivery.Result(delivery.Outcome.DELIVERED, 204))
    before = _scrape()
    # when
    services.delivery_attempt(delivery_id=row.pk)
    # then
    after = _scrape()
    assert _delivered(after) == _delivered(before) + 1
    assert _value(after, "websubhub_delivery_attempt_duration_seconds_count") == (
        _value(before, "websubhub_delivery_attempt_duration_seconds_count") + 1
    )
    assert _value(after, "websubhub_delivery_latency_seconds_count") == (
        _value(before, "websubhub_delivery_latency_seconds_count") + 1
    )
    # the minute since publish landed in the 60 s bucket, not in the 30 s one
    latency_sum = _value(after, "websubhub_delivery_latency_seconds_sum") - _value(
        before, "websubhub_delivery_latency_seconds_sum"
    )
    assert 60 <= latency_sum < 70
    in_30 = _value(after, "websubhub_delivery_latency_seconds_bucket", le="30.0") - _value(
        before, "websubhub_delivery_latency_seconds_bucket", le="30.0"
    )
    in_60 = _value(after, "websubhub_delivery_latency_seconds_bucket", le="60.0") - _value(
        before, "websubhub_delivery_latency_seconds_bucket", le="60.0"
    )
    in_300 = _value(after, "websubhub_delivery_latency_seconds_bucket", le="300.0") - _value(
        before, "websubhub_delivery_latency_seconds_bucket", le="300.0"
    )
    assert (in_30, in_300) == (0, 1)
    assert in_60 <= 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (delivery.Result(delivery.Outcome.RETRY, 500, "HTTP 500"), "retried"),
        (delivery.Result(delivery.Outcome.RETRY, 503, "HTTP 503", retry_after=5), "retried"),
        (delivery.Result(delivery.Outcome.GONE, 410, "HTTP 410"), "gone"),
    ],
)
def test_each_attempt_outcome_is_counted(
    monkeypatch: pytest.MonkeyPatch, settings, result: delivery.Result, outcome: str
) -> None:
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    row = DeliveryFactory()
    monkeypatch.setattr(delivery, "post", lambda *args: result)
    before = _value(_scrape(), "websubhub_deliveries_total", outcome=outcome)
    with contextlib.suppress(services.DeliveryFailed):
        services.delivery_attempt(delivery_id=row.pk)
    assert _value(_scrape(), "websubhub_deliveries_total", outcome=outcome) == before + 1


@pytest.mark.django_db
def test_the_last_failed_attempt_counts_as_failed(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    row = DeliveryFactory(attempts=settings.HUB_DELIVERY_MAX_RETRIES)
    monkeypatch.setattr(delivery, "post", lambda *args: delivery.Result(delivery.Outcome.RETRY, 500, "HTTP 500"))
    before = _value(_scrape(), "websubhub_deliveries_total", outcome="failed")
    assert services.delivery_attempt(delivery_id=row.pk) is None
    assert _value(_scrape(), "websubhub_deliveries_total", outcome="failed") == before + 1


@pytest.mark.django_db
def test_deliveries_that_make_no_attempt_count_as_cancelled_parked_or_rate_limited(
    monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    def attempted(*args: object) -> delivery.Result:
        raise AssertionError("no attempt expected")

    monkeypatch.setattr(delivery, "post", attempted)
    before = _scrape()
    # a lease that ended
    expired = DeliveryFactory(subscription__expires_at=timezone.now() - timedelta(seconds=1))
    services.delivery_attempt(delivery_id=expired.pk)
    # a paused subscription in its cool-down
    paused = DeliveryFactory(
        subscription__state=Subscription.State.PAUSED,
        subscription__resume_after=timezone.now() + timedelta(minutes=5),
    )
    services.delivery_attempt(delivery_id=paused.pk)
    # a callback over its rate limit: its one slot is taken by the first delivery's reservation
    settings.HUB_CALLBACK_RATE_LIMIT = "1/60s"
    limited = DeliveryFactory(subscription__callback="https://rate-limited.example/" + os.urandom(4).hex())
    monkeypatch.setattr(delivery, "post", lambda *args: delivery.Result(delivery.Outcome.DELIVERED, 204))
    services.delivery_attempt(delivery_id=DeliveryFactory(subscription=limited.subscription).pk)
    step = services.delivery_attempt(delivery_id=limited.pk)
    assert step is not None and step.reserved and not step.attempted
    after = _scrape()
    for outcome in ("cancelled", "parked", "rate_limited"):
        assert _value(after, "websubhub_deliveries_total", outcome=outcome) == (
            _value(before, "websubhub_deliveries_total", outcome=outcome) + 1
        ), outcome


@pytest.mark.django_db
def test_verification_outcomes_are_counted(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    settings.HUB_TOPIC_DENYLIST = [r"^https://denied\.example/"]
    answers = iter([verification.Answer(True, 200, ""), verification.Answer(False, 404, "HTTP 404")])
    monkeypatch.setattr(verification, "verify", lambda *args: next(answers))
    monkeypatch.setattr(verification, "notify_denied", lambda *args: verification.Answer(True, 200, ""))
    before = _scrape()
    services.subscription_verify(request_id=SubscriptionRequestFactory().pk)
    services.subscription_verify(request_id=SubscriptionRequestFactory().pk)
    services.subscription_verify(request_id=SubscriptionRequestFactory(topic="https://denied.example/feed").pk)
    after = _scrape()
    for outcome in ("verified", "failed", "denied"):
        assert _value(after, "websubhub_verifications_total", outcome=outcome) == (
            _value(before, "websubhub_verifications_total", outcome=outcome) + 1
        ), outcome


@pytest.mark.django_db
def test_subscription_gauges_count_active_and_paused_subscriptions() -> None:
    SubscriptionFactory.create_batch(3)
    SubscriptionFactory(state=Subscription.State.PAUSED)
    samples = _scrape()
    assert _value(samples, "websubhub_subscriptions", state="active") == 3
    assert _value(samples, "websubhub_subscriptions", state="paused") == 1


@pytest.mark.django_db
def test_large_tables_are_estimated_by_the_planner_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the estimate is PostgreSQL's planner; other databases always count")
    SubscriptionFactory.create_batch(2)
    monkeypatch.setattr(collectors, "EXACT_COUNT_MAX", -1)
    estimated: list[str] = []
    real = collectors._estimated_rows

    def spy(queryset):
        estimated.append(str(queryset.query))
        return real(queryset)

    monkeypatch.setattr(collectors, "_estimated_rows", spy)
    counts = collectors.subscription_counts()
    assert set(counts) == {"active", "paused"}
    assert all(isinstance(n, int) and n >= 0 for n in counts.values())
    # one estimate of the table, one per state; no COUNT
    assert len(estimated) == 3
    assert not any("COUNT(" in sql.upper() for sql in estimated)


@pytest.mark.django_db
def test_metrics_still_answer_without_queue_depths_when_the_broker_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    monkeypatch.setattr(
        health,
        "broker_connection",
        lambda: Connection(url, connect_timeout=0.5, transport_options={"socket_connect_timeout": 0.5}),
    )
    samples = _scrape()
    assert not any(name == "websubhub_queue_depth" for name, _ in samples)
    assert ("websubhub_subscriptions", (("state", "active"),)) in samples


@pytest.mark.django_db
def test_metrics_still_answer_without_subscription_counts_when_the_database_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> dict[str, int]:
        raise OperationalError("connection refused")

    monkeypatch.setattr(collectors, "subscription_counts", broken)
    samples = _scrape()
    assert not any(name == "websubhub_subscriptions" for name, _ in samples)
    assert ("websubhub_deliveries_total", (("outcome", "delivered"),)) in samples


@pytest.mark.django_db
def test_queue_depth_counts_waiting_messages(settings) -> None:
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("needs a broker whose queues the test may fill (Redis)")
    queue = "hub.periodic"
    before = _value(_scrape(), "websubhub_queue_depth", queue=queue)
    with health.broker_connection() as conn:
        conn.SimpleQueue(queue).put({"probe": 1})
    try:
        assert _value(_scrape(), "websubhub_queue_depth", queue=queue) == before + 1
    finally:
        with health.broker_connection() as conn:
            message = conn.SimpleQueue(queue).get(timeout=2)
            message.ack()


@pytest.mark.django_db
def test_metrics_token_requires_a_bearer_header(settings) -> None:
    settings.HUB_METRICS_TOKEN = "s3cret-metrics"
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Token s3cret-metrics").status_code == 401
    refused = Client().get("/metrics")
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics").status_code == 200


def test_metrics_refuses_post() -> None:
    assert Client().post("/metrics").status_code == 405


# --- The worker-side exporter: manage.py hub_metrics_server -------------------------------------


def _wsgi(environ: dict) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(metrics.worker_metrics_app(environ, start_response))
    return answer["status"], answer["headers"], body  # type: ignore[return-value]


def test_worker_exporter_serves_the_counters_without_state_gauges(settings) -> None:
    status, _, body = _wsgi({"PATH_INFO": "/metrics"})
    assert status == "200 OK"
    samples = _parse(body.decode())
    assert ("websubhub_deliveries_total", (("outcome", "delivered"),)) in samples
    assert not any(name in ("websubhub_subscriptions", "websubhub_queue_depth") for name, _ in samples)
    assert _wsgi({"PATH_INFO": "/other"})[0].startswith("404")
    settings.HUB_METRICS_TOKEN = "tok"
    assert _wsgi({"PATH_INFO": "/metrics"})[0].startswith("401")
    assert _wsgi({"PATH_INFO": "/metrics", "HTTP_AUTHORIZATION": "Bearer tok"})[0] == "200 OK"


def test_hub_metrics_server_command_serves_this_machines_metrics_over_http() -> None:
    # given the command running as its own process, on a free port
    port = _closed_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "hub_metrics_server", "--port", str(port)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline().decode()
        assert re.search(rf"http://127\.0\.0\.1:{port}/metrics", banner), banner
        # when scraped
        with urlopen(Request(f"http://127.0.0.1:{port}/metrics"), timeout=5) as response:
            body = response.read().decode()
        # then it shows the counters every process of this machine wrote
        assert "websubhub_deliveries_total" in body
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- End to end: a real worker's counters on the web's /metrics ------------------------------------


@pytest.mark.e2e
def test_worker_deliveries_show_on_the_web_metrics_endpoint(hub, subscriber: Subscriber) -> None:
    # given a subscriber, and the counters before (this process delivers nothing itself)
    from tests.e2e.test_e2e_delivery import _publish

    SubscriptionFactory(topic="metrics.e2e.*", callback=subscriber.url("/metrics-hook"))
    before = _scrape()
    # when the worker delivers a notification
    _publish(api_client(), "metrics.e2e.created", {"n": 1})
    wait_until(lambda: subscriber.deliveries("/metrics-hook"), what="the delivery")

    # then the web's /metrics shows the worker's counts, read from the worker's files
    def counted() -> Samples | None:
        samples = _scrape()
        return samples if _delivered(samples) >= _delivered(before) + 1 else None

    after = wait_until(counted, what="the delivered counter on /metrics")
    assert _value(after, "websubhub_delivery_latency_seconds_count") >= (
        _value(before, "websubhub_delivery_latency_seconds_count") + 1
    )
    assert _value(after, "websubhub_delivery_attempt_duration_seconds_count") >= (
        _value(before, "websubhub_delivery_attempt_duration_seconds_count") + 1
    )
    assert _value(after, "websubhub_notifications_accepted_total") >= (
        _value(before, "websubhub_notifications_accepted_total") + 1
    )
    worker_files = [p for p in settings.HUB_METRICS_DIR.glob("*.db") if not p.name.endswith(f"_{os.getpid()}.db")]
    assert worker_files, "the worker wrote no metric files to HUB_METRICS_DIR"
