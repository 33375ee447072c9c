"""The hub's TLS identity and trust on outbound connections: HUB_CLIENT_CERT, HUB_CLIENT_KEY and HUB_CA_BUNDLE.

Each is checked when the settings load (websubhub/hub_settings.py), so that a wrong
path, a mismatched pair or an encrypted key stops the process at start with the
setting's name, rather than failing every delivery.
"""

import functools
import ssl
from pathlib import Path

import requests
import requests.certs
from django.core.exceptions import ImproperlyConfigured

from subscriptions import netguard
from websubhub.hub_settings import hub_settings


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback, OpenSSL would ask for an encrypted key's passphrase on the terminal.
    raise _EncryptedKey


@functools.lru_cache(maxsize=4)
def client_certificate_setting(cert: str, key: str) -> str | tuple[str, str] | None:
    """HUB_CLIENT_CERT and HUB_CLIENT_KEY checked, as requests takes them (`cert=`); ImproperlyConfigured naming them.

    Both are paths to PEM files; HUB_CLIENT_KEY may be left empty when
    HUB_CLIENT_CERT holds the private key after the certificate. The pair must
    load (and match) now, so that a mistake stops the process at start rather
    than failing every delivery.
    """
    cert, key = cert.strip(), key.strip()
    if not cert:
        if key:
            raise ImproperlyConfigured("HUB_CLIENT_KEY is set but HUB_CLIENT_CERT is not: set both")
        return None
    for name, path in (("HUB_CLIENT_CERT", cert), ("HUB_CLIENT_KEY", key)):
        if path and not Path(path).is_file():
            raise ImproperlyConfigured(f"{name}: no such file: {path}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key or None, password=_no_passphrase)
    except _EncryptedKey:
        raise ImproperlyConfigured(
            f"{'HUB_CLIENT_KEY' if key else 'HUB_CLIENT_CERT'}: the private key is encrypted; the hub needs it "
            "unencrypted (`openssl pkey -in encrypted.pem -out key.pem`), in a file only the hub's user can read"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ImproperlyConfigured("HUB_CLIENT_KEY is not the key of HUB_CLIENT_CERT's certificate") from None
        if not key:
            raise ImproperlyConfigured(
                "HUB_CLIENT_CERT must hold a PEM certificate followed by its private key when HUB_CLIENT_KEY is "
                f"unset ({exc.reason or exc})"
            ) from None
        raise ImproperlyConfigured(
            f"HUB_CLIENT_CERT and HUB_CLIENT_KEY must be a PEM certificate and its private key ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ImproperlyConfigured(f"HUB_CLIENT_CERT or HUB_CLIENT_KEY cannot be read: {exc.strerror}") from None
    return (cert, key) if key else cert


@functools.lru_cache(maxsize=4)
def ca_bundle_setting(path: str) -> str:
    """HUB_CA_BUNDLE checked: a PEM file of CA certificates, or '' for requests' own bundle; ImproperlyConfigured."""
    path = path.strip()
    if not path:
        return ""
    if not Path(path).is_file():
        raise ImproperlyConfigured(f"HUB_CA_BUNDLE: no such file: {path}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ImproperlyConfigured(f"HUB_CA_BUNDLE: {path} holds no readable PEM certificate ({exc})") from None
    return path


def client_certificate() -> str | tuple[str, str] | None:
    """What the hub presents on every outbound TLS connection (HUB_CLIENT_CERT, HUB_CLIENT_KEY), or None."""
    return client_certificate_setting(hub_settings.HUB_CLIENT_CERT, hub_settings.HUB_CLIENT_KEY)


def ca_bundle() -> str:
    """HUB_CA_BUNDLE, or '' when the hub trusts requests' own bundle (certifi)."""
    return ca_bundle_setting(hub_settings.HUB_CA_BUNDLE)


def proxy_tls_context() -> ssl.SSLContext | None:
    """For an https:// HUB_OUTBOUND_PROXY: the TLS to the proxy itself, with the hub's trust and certificate."""
    proxy = netguard.outbound_proxy()
    if proxy is None or proxy.url.scheme != "https":
        return None
    context = ssl.create_default_context(cafile=ca_bundle() or requests.certs.where())
    cert = client_certificate()
    if cert is not None:
        # An egress proxy may tell its clients apart by their certificates (Smokescreen does).
        context.load_cert_chain(*((cert,) if isinstance(cert, str) else cert))
    return context
