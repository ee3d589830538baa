"""The egress policy: which addresses outbound requests (probes, webhook deliveries) may connect to.
It is applied by the curl client to the address actually connected to, after DNS resolution, each
time a connection is opened: a name that resolves to a blocked address is blocked, and a blocked
attempt sends nothing.

- `no-metadata` (the default) blocks link-local addresses and the cloud metadata services;
- `public-only` also blocks loopback, private, shared, unspecified, multicast, broadcast,
  documentation and other reserved addresses: only the public internet is reachable;
- `any` blocks nothing.
IPv4 addresses written as IPv6 (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
`64:ff9b::a.b.c.d`) are judged as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress

MODES = ("no-metadata", "public-only", "any")

_METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")}
_LINK_LOCAL = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10")]
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_DOCUMENTATION = [ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")]
_PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.ip_address("255.255.255.255")


def judged_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address as the policy judges it: IPv4 carried in IPv6 unwrapped, an IPv6 zone dropped."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if (ip in _IPV4_COMPATIBLE and int(ip) > 1) or ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address `ip` is, in words ("a loopback address"); None if public."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if any(ip in network for network in _LINK_LOCAL if network.version == ip.version):
        return "a link-local address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip == _BROADCAST:
        return "the broadcast address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.version == 4 and ip in _SHARED:
        return "a shared address (carrier-grade NAT)"
    if any(ip in network for network in _PRIVATE if network.version == ip.version):
        return "a private address"
    if any(ip in network for network in _DOCUMENTATION if network.version == ip.version):
        return "a documentation address"
    if not ip.is_global:
        return "a reserved address"
    return None


def refusal(mode: str, address: str) -> str | None:
    """Why `mode` forbids connecting to `address` (the detail a blocked result carries), or None."""
    if mode == "any":
        return None
    try:
        ip = judged_address(address)
    except ValueError:
        return f"blocked by the egress policy ({mode}): {address!r} is not an IP address"
    kind = address_kind(ip)
    if kind is None:
        return None
    if mode == "no-metadata" and kind not in ("a cloud metadata address", "a link-local address"):
        return None
    return f"blocked by the egress policy ({mode}): {address} is {kind}"
