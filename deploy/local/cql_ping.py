#!/usr/bin/env python3
"""Proves that a CQL node answers a query, using only the Python standard library.

Speaks the CQL native protocol v4: STARTUP, then QUERY
`SELECT release_version FROM system.local` at consistency ONE, and prints the version.
Exit status 0 when the node answered with rows, 1 otherwise (the reason on stderr).
Used by `deploy/local/stack` to wait for Cassandra; not a general CQL client.
"""

import socket
import struct
import sys

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x07, 0x08
RESULT_ROWS = 0x0002
CONSISTENCY_ONE = 0x0001


def string(s):
    data = s.encode()
    return struct.pack(">H", len(data)) + data


def frame(stream, opcode, body):
    return struct.pack(">BBhBI", VERSION, 0, stream, opcode, len(body)) + body


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the node")
        buf += chunk
    return buf


def recv_frame(sock):
    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBI", recv_exact(sock, 9))
    return opcode, recv_exact(sock, length)


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def string(self):
        return self.take(self.short()).decode()

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)


def error_message(body):
    r = Reader(body)
    code = r.int()
    return f"error 0x{code:04x}: {r.string()}"


def ping(host, port, timeout):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        startup = struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")
        sock.sendall(frame(1, OP_STARTUP, startup))
        opcode, body = recv_frame(sock)
        if opcode == OP_ERROR:
            raise RuntimeError("STARTUP refused, " + error_message(body))
        if opcode != OP_READY:
            raise RuntimeError(f"STARTUP answered with opcode 0x{opcode:02x}, not READY")

        query = "SELECT release_version FROM system.local"
        body = struct.pack(">I", len(query)) + query.encode()
        body += struct.pack(">HB", CONSISTENCY_ONE, 0)
        sock.sendall(frame(2, OP_QUERY, body))
        opcode, body = recv_frame(sock)
        if opcode == OP_ERROR:
            raise RuntimeError("QUERY failed, " + error_message(body))
        if opcode != OP_RESULT:
            raise RuntimeError(f"QUERY answered with opcode 0x{opcode:02x}, not RESULT")

        r = Reader(body)
        if r.int() != RESULT_ROWS:
            raise RuntimeError("QUERY result is not rows")
        flags, columns = r.int(), r.int()
        if flags & 0x0002:  # has_more_pages: skip the paging state
            r.bytes()
        if flags & 0x0004:  # no_metadata
            raise RuntimeError("QUERY result has no metadata")
        if flags & 0x0001:  # global_tables_spec
            r.string(), r.string()
        for _ in range(columns):
            if not flags & 0x0001:
                r.string(), r.string()
            r.string()  # column name
            if r.short() != 0x000D:  # varchar, which has no type parameters
                raise RuntimeError("release_version is not a varchar")
        if r.int() < 1:
            raise RuntimeError("system.local returned no row")
        value = r.bytes()
        return value.decode() if value is not None else "?"


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9042"
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    host, _, port = address.rpartition(":")
    try:
        version = ping(host, int(port), timeout)
    except (OSError, RuntimeError, struct.error, UnicodeDecodeError) as err:
        print(f"cql_ping: {address}: {err}", file=sys.stderr)
        return 1
    print(f"cql_ping: {address} answered, release_version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
