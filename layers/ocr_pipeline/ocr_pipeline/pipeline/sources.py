"""Which sources a request may name: buckets we were given, and https hosts on an allowlist at public addresses.

Pure rules, no I/O: the request service resolves the host through its fetcher, asks `check_addresses`,
and has the fetcher connect to an address that passed, so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot point the download at a private address.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import SourceForbidden

HTTPS_PORT = 443
# IPv6 addresses that carry an IPv4 address in their last 32 bits, routed to it by a translator
# (NAT64, RFC 6052) or that old hosts still read as IPv4 ("IPv4-compatible", RFC 4291). Python calls
# NAT64 and 6to4 addresses global whatever they embed, so `64:ff9b::10.0.0.1` would pass as public.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# RFC 8215's local-use translation prefix: never globally reachable, and its IPv4 embedding depends on
# the operator's prefix length, so it is refused outright.
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


class UrlTarget(BaseModel):
    """An allowed URL taken apart: the host to resolve and verify TLS against, and the port."""

    model_config = ConfigDict(frozen=True)

    url: str
    host: str
    port: int


class SourcePolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Buckets a request may read from; the input bucket is always one of them.
    buckets: frozenset[str] = Field(default_factory=frozenset)
    # Hosts a URL may name: "docs.example.com" exactly, or "*.example.com" for its subdomains.
    url_hosts: tuple[str, ...] = ()

    @field_validator("url_hosts")
    @classmethod
    def _lower(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(h.strip().lower().rstrip(".") for h in hosts if h.strip())

    def check_bucket(self, bucket: str) -> None:
        if bucket not in self.buckets:
            raise SourceForbidden(
                f"bucket {bucket!r} is not one the pipeline may read; allowed: {', '.join(sorted(self.buckets))}",
                bucket=bucket,
            )

    def check_url(self, url: str) -> UrlTarget:
        try:
            parts = urlsplit(url)
            port = parts.port or HTTPS_PORT
        except ValueError as exc:
            raise SourceForbidden(f"the URL cannot be parsed: {exc}") from None
        if parts.scheme != "https":
            raise SourceForbidden("only https URLs are accepted")
        if parts.username is not None or parts.password is not None:
            raise SourceForbidden("URLs with credentials are not accepted")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise SourceForbidden("the URL has no host")
        if not self.host_allowed(host):
            raise SourceForbidden(f"host {host!r} is not on the URL allowlist", host=host)
        _refuse_non_public(host, _literal_address(host))
        return UrlTarget(url=_without_fragment(parts), host=host, port=port)

    def host_allowed(self, host: str) -> bool:
        host = host.lower()
        for allowed in self.url_hosts:
            if allowed.startswith("*."):
                if host.endswith(allowed[1:]) and host != allowed[2:]:
                    return True
            elif host == allowed:
                return True
        return False

    @staticmethod
    def check_addresses(host: str, addresses: list[str]) -> str:
        """The address to connect to: refused unless every address the host resolves to is public."""
        if not addresses:
            raise SourceForbidden(f"host {host!r} does not resolve", host=host)
        # One private answer among public ones is still refused: the attacker chooses which one we'd get.
        for address in addresses:
            _refuse_non_public(host, ipaddress.ip_address(address))
        return addresses[0]


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _refuse_non_public(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> None:
    if address is None:
        return
    judged = _embedded_ipv4(address) or address
    # is_global is False for private, loopback, link-local (incl. 169.254.169.254), shared and reserved ranges.
    if not judged.is_global or judged.is_multicast or address in NAT64_LOCAL:
        embeds = f" (which embeds {judged})" if judged is not address else ""
        raise SourceForbidden(
            f"host {host!r} is at {address}{embeds}, which is not a public address",
            host=host,
            address=str(address),
        )


def _embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to (IPv4-mapped, NAT64, 6to4, IPv4-compatible), judged in its place."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):  # :: and ::1 are IPv6's own
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def _without_fragment(parts: SplitResult) -> str:
    return parts._replace(fragment="").geturl()
