"""What each role needs from the settings, checked before anything starts."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from portcullis.hybrid.protocol import PATH
from portcullis.settings import Settings

# A shared secret that stands alone as the cluster's credential: long enough to guess
# at no rate (`python -c "import secrets; print(secrets.token_urlsafe(32))"`).
MIN_TOKEN_LENGTH = 32


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def websocket_url(control_plane_url: str) -> str:
    """The cluster endpoint of a control plane URL (http(s) or ws(s), any path prefix)."""
    parts = urlsplit(control_plane_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{PATH}"


def role_problems(settings: Settings) -> list[str]:
    """Why `settings` can't run in their role (empty: they can)."""
    problems: list[str] = []
    token = settings.cluster_token
    if settings.role == "all":
        return problems
    if not token:
        problems.append(
            f"PORTCULLIS_CLUSTER_TOKEN is required for --role {settings.role}: the shared "
            "credential of the control plane and its data planes"
        )
    elif len(token) < MIN_TOKEN_LENGTH:
        problems.append(
            f"PORTCULLIS_CLUSTER_TOKEN must be at least {MIN_TOKEN_LENGTH} characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if settings.role == "control-plane":
        return problems
    url = settings.control_plane_url
    if not url:
        problems.append("PORTCULLIS_CONTROL_PLANE_URL is required for --role data-plane")
        return problems
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        problems.append(
            f"PORTCULLIS_CONTROL_PLANE_URL {url!r} is not an http(s):// URL of the control plane"
        )
        return problems
    plain = parts.scheme in ("http", "ws") and not is_loopback(parts.hostname)
    if plain and not settings.cluster_insecure:
        problems.append(
            f"PORTCULLIS_CONTROL_PLANE_URL {url!r} is plain {parts.scheme}:// to a host that "
            "is not loopback: the cluster token and the config would cross the network in "
            "clear. Use https:// (PORTCULLIS_ADMIN_TLS_CERT_FILE on the control plane), or "
            "set PORTCULLIS_CLUSTER_INSECURE=true if the network is private and trusted"
        )
    if settings.cluster_ca_file is not None and not settings.cluster_ca_file.is_file():
        problems.append(f"PORTCULLIS_CLUSTER_CA_FILE {settings.cluster_ca_file} is not a file")
    return problems
