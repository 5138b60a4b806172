"""Where we may send a request: http(s) URLs whose host resolves only to public addresses.

A webhook URL is the user's to choose, so without this guard it could point our servers at
our own network (SSRF). It is checked when the URL is given and again before every delivery,
since a name can resolve elsewhere by then. A host named in WEBHOOK_ALLOW_HOSTS, exactly as
written in the URL, is let through whatever it resolves to (the tests allow 127.0.0.1).
"""

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class AddressRefused(ValueError):
    """The URL may not be called; `message` says why, for the person who gave it."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def allowed_hosts(value):
    """WEBHOOK_ALLOW_HOSTS, a comma-separated list, as the set of host names it allows."""
    if not value:
        return frozenset()
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(host.strip().lower().strip("[]") for host in value if host.strip())


def check_syntax(url):
    """The URL's host, if it is an http(s) URL we could call; AddressRefused otherwise."""
    if not isinstance(url, str) or not url:
        raise AddressRefused("must be an http:// or https:// URL")
    if len(url) > MAX_URL_LENGTH:
        raise AddressRefused(f"is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise AddressRefused(f"is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise AddressRefused("has no host")
    if any(ord(character) < 33 for character in url):
        raise AddressRefused("holds spaces or control characters")
    return parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def check_url(url, allow_hosts=frozenset(), resolve=socket.getaddrinfo):
    """Refuse (AddressRefused) a URL that is not http(s), or whose host resolves to a loopback,
    private, link-local, multicast, reserved or unspecified address, unless allowed by name."""
    host, port = check_syntax(url)
    if host in allow_hosts:
        return
    try:
        found = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise AddressRefused(f"names a host that does not resolve ({host})") from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if not is_public(address):
            raise AddressRefused(
                f"points at a private or reserved address ({address}); "
                "webhooks go to public addresses only"
            )


def is_public(address):
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
