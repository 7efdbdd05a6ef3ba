"""A minimal DNS client (A / AAAA over UDP, RFC 1035) so the ``dns`` check can ask a given resolver
without a third-party dependency. Answers only; no recursion of its own, no TCP fallback."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct

from ..errors import ConnectorError

TYPES = {"A": 1, "AAAA": 28}
RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna")
        if not 0 < len(raw) < 64:
            raise ConnectorError(f"invalid DNS name {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def build_query(name: str, rtype: str, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # recursion desired, one question
    return header + encode_name(name) + struct.pack("!HH", TYPES[rtype], 1)


def _skip_name(msg: bytes, pos: int) -> int:
    while True:
        length = msg[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:  # compression pointer
            return pos + 2
        pos += 1 + length


def parse_answers(msg: bytes, qid: int, rtype: str) -> list[str]:
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        raise ConnectorError("DNS answer id does not match the query")
    rcode = flags & 0x000F
    if rcode == 3:
        return []
    if rcode:
        raise ConnectorError(f"DNS server answered {RCODES.get(rcode, rcode)}")
    pos = 12
    for _ in range(qd):
        pos = _skip_name(msg, pos) + 4
    out = []
    for _ in range(an):
        pos = _skip_name(msg, pos)
        atype, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        pos += 10
        if atype == TYPES[rtype]:
            out.append(str(ipaddress.ip_address(msg[pos:pos + rdlen])))
        pos += rdlen
    return sorted(set(out))


def query(name: str, server: str, port: int = 53, rtype: str = "A", timeout: float = 5) -> list[str]:
    qid = secrets.randbelow(65536)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(build_query(name, rtype, qid), (server, port))
            msg, _ = sock.recvfrom(4096)
        except OSError as exc:
            raise ConnectorError(f"DNS query to {server}:{port} failed: {exc}") from None
    return parse_answers(msg, qid, rtype)
