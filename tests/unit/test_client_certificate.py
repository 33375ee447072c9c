"""HUB_CLIENT_CERT and HUB_CLIENT_KEY: the hub presents its certificate to a real TLS subscriber that requires one.

The CA, the subscriber's certificate and the hub's are made here with trustme;
HUB_CA_BUNDLE makes the hub trust the test CA.
"""

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured

from subscriptions import delivery, http, services, verification
from subscriptions.models import Delivery, DeliveryAttempt
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from tests.support.subscriber import Subscriber, wait_until

JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_bundle: Path
    cert: Path  # the hub's certificate alone
    key: Path  # its private key alone
    both: Path  # the certificate followed by its key, in one file


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    hub = ca.issue_cert("hub.example", common_name="hub.example")
    paths = Pki(ca, folder / "ca.pem", folder / "hub.pem", folder / "hub.key", folder / "hub-with-key.pem")
    ca.cert_pem.write_to_path(str(paths.ca_bundle))
    hub.cert_chain_pems[0].write_to_path(str(paths.cert))
    hub.private_key_pem.write_to_path(str(paths.key))
    paths.both.write_bytes(hub.cert_chain_pems[0].bytes() + hub.private_key_pem.bytes())
    return paths


@pytest.fixture
def mtls_subscriber(pki: Pki) -> Iterator[Subscriber]:
    """An HTTPS subscriber on 127.0.0.1 that completes a handshake only with a certificate from the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.ca.issue_cert("127.0.0.1").configure_cert(context)
    pki.ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    server = Subscriber(tls=context)
    yield server
    server.close()


@pytest.fixture
def trusts_the_test_ca(pki: Pki, settings) -> None:
    settings.HUB_CA_BUNDLE = str(pki.ca_bundle)


@pytest.mark.usefixtures("trusts_the_test_ca")
def test_a_delivery_presents_the_client_certificate_to_a_subscriber_that_requires_one(
    pki: Pki, mtls_subscriber: Subscriber, settings
) -> None:
    # given
    settings.HUB_CLIENT_CERT, settings.HUB_CLIENT_KEY = str(pki.cert), str(pki.key)
    # when
    result = delivery.post(mtls_subscriber.url("/cb"), b'{"n": 1}', JSON)
    # then
    assert result.outcome is delivery.Outcome.DELIVERED, result.error
    assert [r.body for r in mtls_subscriber.deliveries("/cb")] == [b'{"n": 1}']
    assert mtls_subscriber.tls_failures == []


@pytest.mark.usefixtures("trusts_the_test_ca")
def test_without_a_client_certificate_the_delivery_fails_as_a_tls_error(mtls_subscriber: Subscriber, settings) -> None:
    # given: no certificate configured
    settings.HUB_CLIENT_CERT, settings.HUB_CLIENT_KEY = "", ""
    # when
    result = delivery.post(mtls_subscriber.url("/cb"), b"{}", JSON)
    # then: a failed attempt to retry, and the subscriber refused the handshake for want of a certificate
    assert result.outcome is delivery.Outcome.RETRY
    assert result.status_code is None
    assert result.error == "tls error: TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert mtls_subscriber.deliveries() == []
    # (the server records its refusal after sending the alert the hub may already have read)
    wait_until(lambda: mtls_subscriber.tls_failures, timeout=5, what="the subscriber's refusal")
    assert mtls_subscriber.tls_failures == ["PEER_DID_NOT_RETURN_A_CERTIFICATE"]


@pytest.mark.django_db
@pytest.mark.usefixtures("trusts_the_test_ca")
@pytest.mark.parametrize("with_certificate", [True, False])
def test_the_delivery_service_records_the_attempt_delivered_with_the_certificate_and_failed_without(
    pki: Pki, mtls_subscriber: Subscriber, settings, with_certificate: bool
) -> None:
    # given
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    settings.HUB_CLIENT_CERT = str(pki.cert) if with_certificate else ""
    settings.HUB_CLIENT_KEY = str(pki.key) if with_certificate else ""
    pending = DeliveryFactory(subscription=SubscriptionFactory(callback=mtls_subscriber.url("/cb")))
    # when
    services.delivery_attempt(delivery_id=pending.pk)
    # then
    pending.refresh_from_db()
    (attempt,) = DeliveryAttempt.objects.filter(delivery=pending)
    if with_certificate:
        assert pending.status == Delivery.Status.DELIVERED
        assert attempt.status_code == 204
    else:
        assert pending.status == Delivery.Status.PENDING  # to be retried
        assert attempt.status_code is None
        assert attempt.error == "tls error"  # the attempt log keeps the class, the delivery the detail
        assert pending.last_error.startswith("tls error: ")
        assert mtls_subscriber.deliveries() == []


@pytest.mark.usefixtures("trusts_the_test_ca")
def test_a_client_certificate_from_a_ca_the_subscriber_does_not_trust_fails_as_a_tls_error(
    mtls_subscriber: Subscriber, settings, tmp_path: Path
) -> None:
    stranger = trustme.CA().issue_cert("hub.example")
    stranger.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "stranger.pem"))
    settings.HUB_CLIENT_CERT, settings.HUB_CLIENT_KEY = str(tmp_path / "stranger.pem"), ""
    result = delivery.post(mtls_subscriber.url("/cb"), b"{}", JSON)
    assert result.outcome is delivery.Outcome.RETRY
    assert result.error == "tls error: TLSV1_ALERT_UNKNOWN_CA"
    assert mtls_subscriber.deliveries() == []
    wait_until(lambda: mtls_subscriber.tls_failures, timeout=5, what="the subscriber's refusal")
    assert mtls_subscriber.tls_failures == ["CERTIFICATE_VERIFY_FAILED"]


@pytest.mark.usefixtures("trusts_the_test_ca")
def test_a_certificate_file_that_holds_its_key_needs_no_hub_client_key(
    pki: Pki, mtls_subscriber: Subscriber, settings
) -> None:
    settings.HUB_CLIENT_CERT, settings.HUB_CLIENT_KEY = str(pki.both), ""
    result = delivery.post(mtls_subscriber.url("/cb"), b"{}", JSON)
    assert result.outcome is delivery.Outcome.DELIVERED, result.error


@pytest.mark.usefixtures("trusts_the_test_ca")
def test_a_verification_get_presents_the_client_certificate_too(
    pki: Pki, mtls_subscriber: Subscriber, settings
) -> None:
    settings.HUB_CLIENT_CERT, settings.HUB_CLIENT_KEY = str(pki.cert), str(pki.key)
    params = {"hub.mode": "subscribe", "hub.challenge": "c-1"}
    answer = verification.verify(mtls_subscriber.url("/cb"), params, "c-1")
    assert answer.ok, answer.reason
    assert len(mtls_subscriber.verifications("/cb")) == 1


def test_without_hub_ca_bundle_the_test_ca_is_not_trusted(pki: Pki, mtls_subscriber: Subscriber, settings) -> None:
    settings.HUB_CLIENT_CERT, settings.HUB_CLIENT_KEY, settings.HUB_CA_BUNDLE = str(pki.cert), str(pki.key), ""
    result = delivery.post(mtls_subscriber.url("/cb"), b"{}", JSON)
    assert result.outcome is delivery.Outcome.RETRY
    assert result.error == "tls error: CERTIFICATE_VERIFY_FAILED"


# --- The settings, checked at start -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_checks() -> Iterator[None]:
    # The checks are cached by their arguments; files made by one test must not answer for another's.
    http.client_certificate_setting.cache_clear()
    http.ca_bundle_setting.cache_clear()
    yield
    http.client_certificate_setting.cache_clear()
    http.ca_bundle_setting.cache_clear()


def test_the_settings_give_requests_the_pair_or_the_one_file(pki: Pki) -> None:
    assert http.client_certificate_setting(str(pki.cert), str(pki.key)) == (str(pki.cert), str(pki.key))
    assert http.client_certificate_setting(str(pki.both), "") == str(pki.both)
    assert http.client_certificate_setting("", "") is None
    assert http.ca_bundle_setting(str(pki.ca_bundle)) == str(pki.ca_bundle)
    assert http.ca_bundle_setting("") == ""


def _encrypted_key(pki: Pki, folder: Path) -> Path:
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    path = folder / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


def _other_key(folder: Path) -> Path:
    path = folder / "other.key"
    trustme.CA().issue_cert("other.example").private_key_pem.write_to_path(str(path))
    return path


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        (None, "key", "HUB_CLIENT_KEY is set but HUB_CLIENT_CERT is not"),
        ("missing", None, "HUB_CLIENT_CERT: no such file: .*missing.pem"),
        ("cert", "missing", "HUB_CLIENT_KEY: no such file: .*missing.pem"),
        ("cert", None, "HUB_CLIENT_CERT must hold a PEM certificate followed by its private key"),
        ("cert", "other", "HUB_CLIENT_KEY is not the key of HUB_CLIENT_CERT's certificate"),
        ("cert", "encrypted", "HUB_CLIENT_KEY: the private key is encrypted"),
        ("key", "key", "HUB_CLIENT_CERT and HUB_CLIENT_KEY must be a PEM certificate and its private key"),
    ],
)
def test_a_client_certificate_that_does_not_load_stops_the_process_naming_the_setting(
    pki: Pki, tmp_path: Path, cert: str | None, key: str | None, message: str
) -> None:
    files = {
        None: "",
        "cert": str(pki.cert),
        "key": str(pki.key),
        "missing": str(tmp_path / "missing.pem"),
        "other": str(_other_key(tmp_path)),
        "encrypted": str(_encrypted_key(pki, tmp_path)),
    }
    with pytest.raises(ImproperlyConfigured, match=message):
        http.client_certificate_setting(files[cert], files[key])


def test_a_hub_ca_bundle_that_is_missing_or_not_pem_stops_the_process(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="HUB_CA_BUNDLE: no such file"):
        http.ca_bundle_setting(str(tmp_path / "none.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ImproperlyConfigured, match=r"HUB_CA_BUNDLE: .* holds no readable PEM certificate"):
        http.ca_bundle_setting(str(garbage))
