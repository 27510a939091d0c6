"""SNS signing certificates: a local directory first, then (only if allowed) HTTPS.

The gateway must work without internet, so the operator can drop the PEM files from
``SigningCertURL`` into ``gateway.ses.cert_dir`` (file name = the URL's last path segment).
Fetching is opt-in (``gateway.ses.fetch_certs``); the URL host is pinned to
``sns.<region>.amazonaws.com`` before anything is read or fetched, and the fetch goes over
HTTPS with the system CA bundle, so the TLS chain vouches for the certificate.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from cryptography import x509

from gateway.signatures import SNS_CERT_HOST, sns_url_allowed

log = logging.getLogger(__name__)

Fetcher = Callable[[str], bytes]

# AWS certificates are a few KB; anything larger is not one.
MAX_CERT_BYTES = 64 * 1024


class CertError(Exception):
    """A certificate that cannot be used; the message says why."""


def https_fetch(url: str, timeout_s: float = 5.0) -> bytes:
    """GET a certificate over HTTPS (certificate chain and host name checked by urllib)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # URL host pinned by caller
        return response.read(MAX_CERT_BYTES + 1)


class CertStore:
    """Parsed certificates by URL, cached for the life of the process (AWS rotates them
    under a new URL, so an entry never goes stale in place)."""

    def __init__(self, directory: str | Path | None = None, fetch: Fetcher | None = None,
                 host_pattern: re.Pattern[str] = SNS_CERT_HOST, max_entries: int = 64) -> None:
        self._dir = Path(directory) if directory else None
        self._fetch = fetch
        self._pattern = host_pattern
        self._max = max_entries
        self._cache: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def add(self, url: str, pem: bytes) -> None:
        """Put a certificate in the cache (used by tests and by pre-loading)."""
        cert = _parse(pem, url)
        with self._lock:
            self._cache[url] = cert

    def get(self, url: str) -> x509.Certificate:
        if not sns_url_allowed(url, self._pattern):
            raise CertError(f"certificate URL {url!r} is not an SNS host")
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None:
            return cached
        cert = _parse(self._load(url), url)
        with self._lock:
            # Only URLs that passed the host pin get here, so the cache stays small;
            # the cap guards against a flood of distinct (real) AWS URLs.
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[url] = cert
        return cert

    def _load(self, url: str) -> bytes:
        name = PurePosixPath(urlsplit(url).path).name
        if self._dir is not None and name:
            path = self._dir / name
            if path.is_file():
                return path.read_bytes()
        if self._fetch is None:
            raise CertError(f"certificate {name!r} is not in the local store and fetching "
                            "is off (gateway.ses.fetch_certs)")
        log.info("fetching SNS signing certificate %s", url)
        data = self._fetch(url)
        if len(data) > MAX_CERT_BYTES:
            raise CertError(f"certificate at {url} is larger than {MAX_CERT_BYTES} bytes")
        return data


def _parse(pem: bytes, url: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertError(f"certificate for {url} is not a PEM X.509 certificate: {exc}") \
            from None
