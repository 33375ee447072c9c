"""A real worker behind HUB_OUTBOUND_PROXY, presenting HUB_CLIENT_CERT to a subscriber that requires it.

The worker's verification GET, topic fetch and delivery POST all go through a
real CONNECT proxy on 127.0.0.1 (tests/support/proxy.py), which alone can
resolve the test names, and the subscriber completes TLS only with a client
certificate from the test CA. The session's worker is stopped meanwhile, so
that this worker alone takes the tasks.
"""

import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import trustme

from subscriptions.models import Delivery, DeliveryAttempt, Subscription
from tests.support.auth import api_client
from tests.support.processes import WorkerProcess, _database_url
from tests.support.proxy import ConnectProxy
from tests.support.subscriber import Subscriber, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def mtls_subscriber(ca: trustme.CA) -> Iterator[Subscriber]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("subscriber.test").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    server = Subscriber(tls=context)
    yield server
    server.close()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    server = ConnectProxy(hosts={"subscriber.test": "127.0.0.1", "publisher.test": "127.0.0.1"})
    yield server
    server.close()


@pytest.fixture
def proxied_worker(
    hub: WorkerProcess, ca: trustme.CA, proxy: ConnectProxy, tmp_path: Path, settings
) -> Iterator[WorkerProcess]:
    """The only worker running: its outbound requests go through `proxy` and present the hub's certificate."""
    cert = ca.issue_cert("hub.example")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    outbound = {
        "HUB_OUTBOUND_PROXY": proxy.url,
        "HUB_CLIENT_CERT": str(files["cert"]),
        "HUB_CLIENT_KEY": str(files["key"]),
        "HUB_CA_BUNDLE": str(files["ca"]),
    }
    # The web side (this process) reads the same settings, as it would in one deployment.
    for name, value in outbound.items():
        setattr(settings, name, value)
    hub.stop()
    worker = WorkerProcess(
        _database_url(), tmp_path, name=f"proxied-{os.getpid()}-{time.monotonic_ns() % 100000}", env=outbound
    )
    worker.start()
    yield worker
    worker.stop()
    # (the `hub` fixture starts the session's worker again)


def test_a_worker_behind_the_proxy_verifies_fetches_and_delivers_through_it_presenting_its_certificate(
    proxied_worker: WorkerProcess, proxy: ConnectProxy, mtls_subscriber: Subscriber, subscriber: Subscriber
) -> None:
    # given: a publisher and an mTLS subscriber reachable only by names the proxy resolves
    feed = b"<feed>through the proxy</feed>"
    subscriber.content["/feed"] = (feed, "application/atom+xml")
    topic = f"http://publisher.test:{subscriber.port}/feed"
    callback = f"https://subscriber.test:{mtls_subscriber.port}/cb"
    client = api_client()
    # when: it subscribes
    body = urlencode({"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": callback})
    response = client.post("/hub", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202, response.content
    # then: the verification GET reached it through the proxy, with the hub's certificate
    wait_until(
        lambda: Subscription.objects.filter(callback=callback, state=Subscription.State.ACTIVE).exists(),
        what="the subscription verified",
    )
    assert len(mtls_subscriber.verifications("/cb")) == 1
    # when: the publisher pings the hub
    body = urlencode({"hub.mode": "publish", "hub.url": topic})
    response = client.post("/hub", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202, response.content
    # then: the worker fetched the topic and delivered it, both through the proxy
    (got,) = wait_until(lambda: mtls_subscriber.deliveries("/cb"), what="the delivery")
    assert got.body == feed
    delivered = wait_until(lambda: Delivery.objects.filter(callback=callback, status=Delivery.Status.DELIVERED).first())
    assert [a.status_code for a in DeliveryAttempt.objects.filter(delivery=delivered)] == [204]
    assert len(subscriber.requests("GET", "/feed")) == 1
    assert set(proxy.targets()) == {f"subscriber.test:{mtls_subscriber.port}", f"publisher.test:{subscriber.port}"}
    assert proxy.others() == []
    assert mtls_subscriber.tls_failures == []
