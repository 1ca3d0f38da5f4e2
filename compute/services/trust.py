"""The node trust boundary: which addresses the gateway may be sent to by a node.

Nodes are third parties and the gateway POSTs to their replicas with each replica's
secret, so an address a node reports (or an admin pins) is resolved once, at
registration, and every IP it resolves to must:

* lie inside ``COMPUTE_NODE_NETWORKS`` (CIDRs, or ``public`` for any globally routable
  address; private ranges only when listed), or be loopback with
  ``COMPUTE_ALLOW_LOOPBACK_NODES`` on (the local stack, where everything shares one host);
* never be link-local, multicast, unspecified, reserved or a cloud metadata address;
* never be an address of the platform's own services (the hosts of ``DATABASE_URL``,
  ``REDIS_URL``, ``CELERY_BROKER_URL``, ``S3_ENDPOINT``, ``S3_PUBLIC_ENDPOINT``).

The first resolved IP is stored on the node and replica URLs are built from it, so a
later DNS answer cannot move the gateway elsewhere. On a loopback node (the local stack)
the replica port must not be a port of the platform's services.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings

from portal.errors import PlatformError

logger = logging.getLogger(__name__)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)

# Instance metadata and other cloud control-plane endpoints. Link-local ones are refused
# anyway; the list names them so the refusal says why, and adds the routable ones.
METADATA_ADDRESSES: frozenset[IP] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, Huawei
        "169.254.169.253",  # AWS VPC DNS
        "169.254.169.123",  # AWS time sync
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity agent
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud (legacy)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",  # AWS DNS over IPv6
        "fd00:ec2::123",  # AWS time sync over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity agent over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
SERVICE_SETTINGS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "S3_ENDPOINT")
DEFAULT_PORTS = {
    "postgres": 5432,
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6379,
    "http": 80,
    "https": 443,
}


def refuse(message: str) -> PlatformError:
    return PlatformError(message, param="address")


def resolve_node_address(value: str) -> str:
    """The one IP the gateway will dial for ``value`` (an IP or host name), or a 400."""
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not (_is_ip(host) or _HOSTNAME.fullmatch(host)):
        raise refuse(f"'{value}' is not an IP address or host name.")
    ips = resolve(host)
    if not ips:
        raise refuse(f"'{value}' does not resolve to any address.")
    for ip in ips:
        check_ip(ip, value)
    return str(ips[0])


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def resolve(host: str) -> list[IP]:
    """Every address ``host`` resolves to (odd IPv4 forms such as ``127.1`` included),
    unwrapped from IPv4-mapped, 6to4 and NAT64 forms, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        return []
    ips: list[IP] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]
        ip = unwrap(ipaddress.ip_address(raw))
        if ip not in ips:
            ips.append(ip)
    return ips


def unwrap(ip: IP) -> IP:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), else ``ip`` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def check_ip(ip: IP, reported: str) -> None:
    """Raise a 400 unless ``ip`` may be dialled by the gateway as a node's replica host."""
    where = f"'{reported}'" if reported == str(ip) else f"'{reported}' ({ip})"
    if ip in METADATA_ADDRESSES:
        raise refuse(f"{where} is a cloud metadata address.")
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        raise refuse(f"{where} cannot be a node address (link-local, multicast or reserved).")
    if ip.is_loopback:
        if not settings.COMPUTE_ALLOW_LOOPBACK_NODES:
            raise refuse("Loopback node addresses are not allowed.")
        return  # the local stack: ports of the platform's services are refused per replica
    if ip in platform_ips():
        raise refuse(f"{where} is an address of the platform's own services.")
    if not in_node_networks(ip):
        raise refuse(f"{where} is outside the networks nodes may live in (COMPUTE_NODE_NETWORKS).")


def in_node_networks(ip: IP) -> bool:
    for entry in settings.COMPUTE_NODE_NETWORKS:
        if entry == "public":
            if ip.is_global:
                return True
        elif ip in ipaddress.ip_network(entry, strict=False):
            return True
    return False


def platform_endpoints() -> set[tuple[IP, int]]:
    """(IP, port) of every service the platform itself uses, as resolved now."""
    endpoints: set[tuple[IP, int]] = set()
    urls = [getattr(settings, name, "") for name in SERVICE_SETTINGS]
    urls.append(getattr(settings, "S3_PUBLIC_ENDPOINT", ""))
    for url in filter(None, urls):
        parts = urlsplit(url)
        if not parts.hostname:
            continue
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
        except ValueError:
            continue
        endpoints.update((ip, port) for ip in resolve(parts.hostname))
    return endpoints


def platform_ips() -> set[IP]:
    return {ip for ip, _ in platform_endpoints()}


def check_replica_port(ip: str, port: int) -> None:
    """A replica must not claim a port of the platform's services on a shared host (a
    loopback node; other node IPs were checked against those services at registration)."""
    address = ipaddress.ip_address(ip)
    if address.is_loopback and (address, port) in platform_endpoints():
        raise PlatformError(f"Port {port} belongs to one of the platform's services.", param="port")
