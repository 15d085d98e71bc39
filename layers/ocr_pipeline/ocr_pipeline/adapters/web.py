"""httpx adapter of `SourceFetcher`: downloads a request's URL from an address the caller already vetted.

The connection goes to that IP address while TLS is verified against the URL's host (SNI), so the
name cannot be re-resolved to somewhere else between the check and the download. Redirects are
refused rather than followed: their target was never checked. Proxies from the environment are
ignored for the same reason.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from ..errors import InputTooLarge, SourceFetchFailed, SourceUnavailable
from ..pipeline.port_errors import SourceNotFound
from ..pipeline.records import Download

if TYPE_CHECKING:
    import httpx

CHUNK_BYTES = 256 * 1024

Resolver = Callable[..., list[tuple[Any, ...]]]


class HttpSourceFetcher:
    def __init__(
        self,
        *,
        timeout_s: float = 30.0,
        resolver: Resolver = socket.getaddrinfo,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._resolver = resolver
        self._transport = transport

    def resolve(self, host: str, port: int) -> list[str]:
        try:
            answers = self._resolver(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise SourceUnavailable(f"looking up {host!r} failed for now: {exc}", host=host) from None
            raise SourceFetchFailed(f"host {host!r} does not resolve: {exc}", host=host) from None
        addresses: list[str] = []
        for answer in answers:
            address = str(answer[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
            if address not in addresses:
                addresses.append(address)
        return addresses

    def download(self, url: str, address: str, sink: BinaryIO, max_bytes: int) -> Download:
        # Imported by the first download: most requests name an object in a bucket, and need no HTTP client.
        import httpx

        parts = urlsplit(url)
        host = parts.hostname or ""
        pinned_host = f"[{address}]" if ":" in address else address
        pinned = parts._replace(netloc=pinned_host + (f":{parts.port}" if parts.port else "")).geturl()
        host_header = host + (f":{parts.port}" if parts.port else "")
        try:
            with (
                httpx.Client(
                    timeout=self.timeout_s, follow_redirects=False, trust_env=False, transport=self._transport
                ) as client,
                client.stream(
                    "GET", pinned, headers={"Host": host_header}, extensions={"sni_hostname": host}
                ) as response,
            ):
                self._check_status(response, url)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise InputTooLarge(f"{url} is {declared} bytes; the limit is {max_bytes}", size=int(declared))
                digest = hashlib.sha256()
                size = 0
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputTooLarge(f"{url} is larger than the limit of {max_bytes} bytes", size=size)
                    digest.update(chunk)
                    sink.write(chunk)
                content_type = response.headers.get("content-type")
        except httpx.TimeoutException as exc:
            raise SourceUnavailable(f"{url} timed out: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                # Another try would meet the same certificate.
                raise SourceFetchFailed(f"{url} has a certificate that does not verify: {exc}") from None
            # Connection refused or reset, and the like: worth another delivery.
            raise SourceUnavailable(f"{url} could not be read: {type(exc).__name__}: {exc}") from None
        return Download(size=size, sha256=digest.hexdigest(), content_type=content_type)

    @staticmethod
    def _check_status(response: httpx.Response, url: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if 300 <= status < 400:
            raise SourceFetchFailed(f"{url} redirects (HTTP {status}); redirects are not followed", status=status)
        if status in (404, 410):
            raise SourceNotFound(f"{url} does not exist (HTTP {status})", status=status)
        if status in (408, 429) or status >= 500:
            raise SourceUnavailable(f"{url} answered HTTP {status}", status=status)
        raise SourceFetchFailed(f"{url} answered HTTP {status}", status=status)
