#!/usr/bin/python3
"""Malicious HTTP/2 peers against a running permitd (issue 6, item 2).

Run by tests/cli/test_hostile_h2.sh, one scenario per run:

    hostile_h2.py SCENARIO --pid PID --api PORT [--peer PORT --cert C --key K]

The attacks are raw frames on raw sockets (h2c on the local API, mutual
TLS on the peer listener, HTTPS on the public listener); what the node
answers is parsed with hyperframe and hpack (python3-h2's own framing and
HPACK), and the well-behaved client running alongside, on its own h2c
connection, is python3-h2.  None of it shares code with nghttp2.  Every
attack is bounded in frames, connections and seconds.  Each scenario
prints what it sent, what came back, the node's memory (VmRSS, VmHWM)
before and after and the well-behaved client's results, with "ok:" or
"FAIL:" for each check.
"""
import argparse
import os
import resource
import selectors
import socket
import ssl
import struct
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame,
                              GoAwayFrame, HeadersFrame, RstStreamFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, WINDOW_UPDATE, CONTINUATION = \
    0x0, 0x1, 0x3, 0x4, 0x8, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR",
          3: "FLOW_CONTROL_ERROR", 4: "SETTINGS_TIMEOUT",
          5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
          8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR",
          11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY",
          13: "HTTP_1_1_REQUIRED"}
CHECK = "/grpc.health.v1.Health/Check"
EMPTY_MSG = b"\x00\x00\x00\x00\x00"          # an empty HealthCheckRequest
SERVING = b"\x00\x00\x00\x00\x02\x08\x01"    # HealthCheckResponse{SERVING}

# Instrumented nodes are several times slower: longer waits, same attacks
# unless a scenario scales itself down (it says so).
SANITIZE = os.environ.get("PERMIT_SANITIZE", "OFF") == "ON"
SLOW = 4.0 if SANITIZE else 1.0

failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


def say(*a):
    print(*a, flush=True)


def frame(ftype, flags, sid, payload=b""):
    """One raw frame: no validation, so it can be as wrong as wanted."""
    return (struct.pack(">I", len(payload))[1:] +
            struct.pack(">BBI", ftype, flags, sid & 0x7FFFFFFF) + payload)


def settings(pairs=()):
    return frame(SETTINGS, 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def header_block(path=CHECK, extra=(), authority="127.0.0.1"):
    """A gRPC request header block that leaves no HPACK state behind
    (every field never-indexed or static), so it can be sent again and
    again."""
    return raw_block([(":method", "POST"), (":scheme", "http"),
                      (":path", path), (":authority", authority),
                      ("content-type", "application/grpc"),
                      ("te", "trailers")] + list(extra))


def raw_block(fields):
    return Encoder().encode(
        [NeverIndexedHeaderTuple(n, v) for n, v in fields], huffman=False)


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except FileNotFoundError:
        pass
    return out


def vm(pid):
    """VmRSS, VmHWM and VmPeak of |pid| in KiB (0 once it is gone)."""
    st = status(pid)
    return {k: int(st.get(k, "0 kB").split()[0])
            for k in ("VmRSS", "VmHWM", "VmPeak")}


def alive(pid):
    """Running, not gone nor a zombie (the node is the shell's child)."""
    return status(pid).get("State", "Z")[:1] not in ("Z", "X")


class Wire:
    """A raw client connection: bytes out, parsed frames in."""

    def __init__(self, port, tls=None, preface=True, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock,
                                        server_hostname="node.example")
        self.buf = bytearray()
        self.dec = Decoder()
        self.dec.max_allowed_table_size = 65536
        self.block = {}             # stream id -> header block so far
        self.frames = []            # every frame received, in order
        self.headers = {}           # stream id -> list of decoded blocks
        self.goaway = None          # (error name, last stream id)
        self.rst = {}               # stream id -> error name
        self.closed = False
        self.close_time = None
        if preface:
            self.send(PREFACE + settings())

    def send(self, data):
        """False once the node has closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError,
                socket.timeout, OSError):
            self._closed()
            return False

    def _closed(self):
        if not self.closed:
            self.closed = True
            self.close_time = time.monotonic()

    def _parse(self):
        while len(self.buf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            body = bytes(self.buf[9:9 + length])
            del self.buf[:9 + length]
            f.parse_body(memoryview(body))
            self.frames.append(f)
            if isinstance(f, GoAwayFrame) and self.goaway is None:
                self.goaway = (ERRORS.get(f.error_code, f.error_code),
                               f.last_stream_id)
            elif isinstance(f, RstStreamFrame):
                self.rst.setdefault(f.stream_id,
                                    ERRORS.get(f.error_code, f.error_code))
            elif isinstance(f, (HeadersFrame, ContinuationFrame)):
                self.block[f.stream_id] = (self.block.get(f.stream_id, b"") +
                                           f.data)
                if "END_HEADERS" in f.flags:
                    fields = self.dec.decode(self.block.pop(f.stream_id),
                                             raw=False)
                    self.headers.setdefault(f.stream_id, []).append(
                        dict(fields))

    def pump(self, seconds):
        """Reads what the node sends for up to |seconds|; stops early at
        EOF.  Returns True when the connection is closed."""
        end = time.monotonic() + seconds
        while not self.closed:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                self._closed()
                break
            self.buf += data
            self._parse()
        return self.closed

    def poll(self):
        """Reads whatever is there without waiting."""
        self.sock.setblocking(False)
        try:
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    self._closed()
                    break
                self.buf += data
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except (ConnectionResetError, ssl.SSLError, OSError):
            self._closed()
        self.sock.setblocking(True)
        self._parse()
        return self.closed

    def wait(self, pred, seconds):
        """Reads until pred() holds, the connection closes or time is up."""
        end = time.monotonic() + seconds
        while not pred() and not self.closed and time.monotonic() < end:
            self.pump(min(0.05, max(0.0, end - time.monotonic())))
        return pred()

    def grpc_status(self, sid):
        for h in self.headers.get(sid, []):
            if "grpc-status" in h:
                return int(h["grpc-status"]), h.get("grpc-message", "")
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def check_on(w, sid, what):
    """Makes a Health/Check on stream |sid| of |w|; True when SERVING."""
    w.send(frame(HEADERS, END_HEADERS, sid, header_block()) +
           frame(DATA, END_STREAM, sid, EMPTY_MSG))
    w.wait(lambda: w.grpc_status(sid) is not None or sid in w.rst,
           5 * SLOW)
    st = w.grpc_status(sid)
    got = b"".join(f.data for f in w.frames
                   if isinstance(f, DataFrame) and f.stream_id == sid)
    good = st is not None and st[0] == 0 and got == SERVING
    check(good, f"{what}: Health/Check on stream {sid} answered "
          f"{'SERVING' if good else (st, w.rst.get(sid), got)}")
    return good


class Probe(threading.Thread):
    """The well-behaved client: python3-h2 on its own connection, calling
    Health/Check back to back until stopped; counts answers, failures and
    the slowest answer."""

    def __init__(self, port, deadline=2.0):
        super().__init__(daemon=True)
        self.port = port
        self.deadline = deadline * SLOW
        self.stop = threading.Event()
        self.answered = self.failed = self.reconnects = 0
        self.worst = 0.0
        self.errors = []

    def _connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        return sock, conn

    def _call(self, sock, conn):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                (":path", CHECK),
                                (":authority", "127.0.0.1"),
                                ("content-type", "application/grpc"),
                                ("te", "trailers")])
        conn.send_data(sid, EMPTY_MSG, end_stream=True)
        sock.sendall(conn.data_to_send())
        body, status = b"", None
        end = time.monotonic() + self.deadline
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer within the deadline")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived) and \
                        ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(
                        ev.flow_controlled_length, sid)
                elif isinstance(ev, (h2.events.TrailersReceived,
                                     h2.events.ResponseReceived)) and \
                        ev.stream_id == sid:
                    status = dict(ev.headers).get("grpc-status", status)
                elif isinstance(ev, h2.events.StreamReset) and \
                        ev.stream_id == sid:
                    raise ConnectionError(f"stream reset {ev.error_code}")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY {ev.error_code}")
                elif isinstance(ev, h2.events.StreamEnded) and \
                        ev.stream_id == sid:
                    sock.sendall(conn.data_to_send())
                    return status == "0" and body == SERVING
            out = conn.data_to_send()
            if out:
                sock.sendall(out)

    def run(self):
        sock = conn = None
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                if sock is None:
                    sock, conn = self._connect()
                good = self._call(sock, conn)
            except Exception as e:          # counted, never fatal here
                good = False
                self.errors.append(f"{type(e).__name__}: {e}")
                if sock is not None:
                    sock.close()
                sock = None
                self.reconnects += 1
            self.worst = max(self.worst, time.monotonic() - t)
            if good:
                self.answered += 1
            else:
                self.failed += 1
                self.stop.wait(0.05)
            self.stop.wait(0.005)
        if sock is not None:
            sock.close()

    def finish(self):
        self.stop.set()
        self.join(10 * SLOW)
        return self


def tls_context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE     # the attacker does not care
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(args.cert, args.key)
    return ctx


class Run:
    """One scenario's frame: memory before and after, the probe alongside,
    and the node alive at the end."""

    def __init__(self, args, name, rss_bound_mib):
        self.args, self.name = args, name
        self.bound = rss_bound_mib * (3 if SANITIZE else 1)

    def __enter__(self):
        self.before = vm(self.args.pid)
        self.t0 = time.monotonic()
        self.probe = Probe(self.args.api)
        self.probe.start()
        # Connected and answered before the attack starts (an attack on
        # the connection cap would otherwise keep it out).
        end = time.monotonic() + 10 * SLOW
        while self.probe.answered == 0 and time.monotonic() < end:
            time.sleep(0.01)
        say(f"== {self.name}: node RSS {self.before['VmRSS']} KiB, "
            f"HWM {self.before['VmHWM']} KiB")
        return self

    def during(self, label, fn, seconds):
        """Runs fn() again and again for |seconds| (the sustained part of
        an attack) and checks the well-behaved client meanwhile.  fn
        returns a tally to add up."""
        p = self.probe
        a0, f0 = p.answered, p.failed
        t0, rounds, tally = time.monotonic(), 0, 0
        while time.monotonic() - t0 < seconds and rounds < 1000:
            tally += fn()
            rounds += 1
        took = time.monotonic() - t0
        a, f = p.answered - a0, p.failed - f0
        say(f"   sustained: {label}: {rounds} rounds, {tally} in "
            f"{took:.1f} s")
        check(a > 0 and f == 0, f"meanwhile the well-behaved client got "
              f"{a} answers, {f} failures")

    def __exit__(self, *exc):
        if exc[0] is not None:
            self.probe.finish()
            return False
        # Let the probe run on a little after the attack, too.
        time.sleep(0.3)
        p = self.probe.finish()
        after = vm(self.args.pid)
        grow = (after["VmRSS"] - self.before["VmRSS"]) / 1024
        say(f"   memory: RSS {self.before['VmRSS']} -> {after['VmRSS']} KiB "
            f"({grow:+.1f} MiB), HWM {self.before['VmHWM']} -> "
            f"{after['VmHWM']} KiB; {time.monotonic() - self.t0:.1f} s")
        check(alive(self.args.pid), "the node is up")
        hwm_grow = (after["VmHWM"] - self.before["VmHWM"]) / 1024
        check(grow < self.bound and hwm_grow < self.bound,
              f"memory bounded: RSS {grow:+.1f} MiB, HWM {hwm_grow:+.1f} MiB "
              f"(bound {self.bound} MiB)")
        check(p.answered > 0 and p.failed == 0,
              f"the well-behaved client: {p.answered} answers, {p.failed} "
              f"failed, slowest {p.worst * 1000:.0f} ms"
              + (f" ({p.errors[:3]})" if p.errors else ""))
        w = Wire(self.args.api)
        check_on(w, 1, "a fresh connection afterwards")
        w.close()
        return False


# ---------------------------------------------------------------- #
# scenarios                                                          #

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__.replace("_", "-")] = fn
    return fn


def attacker(args, tls):
    """A raw connection to the API listener, or the peer listener over
    TLS with the pinned client certificate."""
    if tls:
        return Wire(args.peer, tls_context(args))
    return Wire(args.api)


def where(tls):
    return "peer listener, TLS 1.3" if tls else "local API, h2c"


def flood(w, make, streams, seconds, batch=100):
    """Sends make(stream id) for new streams, |batch| at a time, until the
    node cuts the connection off, |streams| are sent or time is up.
    Returns (streams sent, seconds)."""
    t0, sid, n = time.monotonic(), 1, 0
    while n < streams and time.monotonic() - t0 < seconds:
        if not w.send(b"".join(make(s) for s in range(sid, sid + 2 * batch,
                                                       2))):
            break
        sid += 2 * batch
        n += batch
        if w.poll() or w.goaway:
            break
    took = time.monotonic() - t0
    w.pump(3 * SLOW)            # the GOAWAY, then the close
    return n, took


def rst(sid, code=8):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def expect_cut(w, codes, what):
    """The node sent a GOAWAY with one of |codes| and closed."""
    got = w.goaway[0] if w.goaway else None
    check(got in codes and w.closed,
          f"{what}: GOAWAY {got} (last stream "
          f"{w.goaway[1] if w.goaway else '-'}), connection "
          f"{'closed' if w.closed else 'STILL OPEN'}")


@scenario
def rapid_reset(args):
    """CVE-2023-44487: complete requests, each cancelled at once."""
    blk = header_block()

    def attack(s):
        return (frame(HEADERS, END_HEADERS, s, blk) +
                frame(DATA, END_STREAM, s, EMPTY_MSG) + rst(s))

    with Run(args, f"rapid reset ({where(args.tls)})", 32) as run:
        w = attacker(args, args.tls)
        n, took = flood(w, attack, 20000, 5)
        say(f"   one connection: {n} x (HEADERS, DATA, RST_STREAM) in "
            f"{took:.2f} s ({n / max(took, 1e-3):.0f} streams/s offered)")
        expect_cut(w, ("ENHANCE_YOUR_CALM",), "rapid reset")
        check(w.goaway is not None and w.goaway[1] < 2 * 1200,
              f"cut off after about a thousand resets (last stream id "
              f"{w.goaway[1] if w.goaway else '-'})")
        w.close()
        # The attacker reconnects and starts over, again and again.
        codes = set()

        def again():
            w = attacker(args, args.tls)
            n, _ = flood(w, attack, 5000, 2)
            codes.add(w.goaway[0] if w.goaway else
                      "no GOAWAY" if w.closed else "still open")
            w.close()
            return n
        run.during("a new connection, a new flood, each cut off; streams "
                   "offered", again, 2)
        check(codes == {"ENHANCE_YOUR_CALM"},
              f"every reconnection cut off the same way: {sorted(codes)}")
        if args.tls:
            w = attacker(args, True)
            check_on(w, 1, "a fresh TLS connection")
            w.close()
    if args.tls:
        return
    # The same effect without a single RST_STREAM from the client: each
    # request is made to fail with a stream error, so the node resets it
    # (CVE-2025-8671, "MadeYouReset").
    with Run(args, "provoked resets (WINDOW_UPDATE overflow per stream)",
             32):
        w = attacker(args, False)
        n, took = flood(w, lambda s: frame(HEADERS, END_HEADERS, s, blk) +
                        frame(DATA, END_STREAM, s, EMPTY_MSG) +
                        window_update(s, 0x7FFFFFFF), 20000, 5)
        say(f"   {n} streams in {took:.2f} s; the node reset "
            f"{len(w.rst)} of them ({sorted(set(w.rst.values()))})")
        expect_cut(w, ("ENHANCE_YOUR_CALM",), "provoked resets")
        w.close()


@scenario
def continuation_flood(args):
    """CVE-2024-27316 class: a header block that never ends."""
    blk = header_block()
    field = Encoder().encode([NeverIndexedHeaderTuple("x-a", "b" * 1000)],
                             huffman=False)
    with Run(args, f"CONTINUATION flood ({where(args.tls)})", 32) as run:
        for label, payload, limit in (
                ("empty CONTINUATION frames", b"", 100000),
                ("16 KiB CONTINUATION frames", field * 16, 2000),
                ("1-byte CONTINUATION frames", blk[:1], 100000)):
            w = attacker(args, args.tls)
            w.send(frame(HEADERS, 0, 1, blk[:8]))
            t0, n = time.monotonic(), 0
            while n < limit and time.monotonic() - t0 < 5:
                if not w.send(frame(CONTINUATION, 0, 1, payload) * 50):
                    break
                n += 50
                if w.poll() or w.goaway:
                    break
            took = time.monotonic() - t0
            w.pump(3 * SLOW)
            say(f"   {label}: {n} sent in {took:.2f} s "
                f"({n * len(payload) // 1024} KiB of header block)")
            expect_cut(w, ("ENHANCE_YOUR_CALM",), label)
            w.close()
        # Another stream's HEADERS in the middle of a header block.
        w = attacker(args, args.tls)
        w.send(frame(HEADERS, 0, 1, blk[:8]) +
               frame(HEADERS, END_HEADERS, 3, blk))
        w.pump(3 * SLOW)
        expect_cut(w, ("PROTOCOL_ERROR",), "HEADERS inside a header block")
        w.close()

        def again():
            w = attacker(args, args.tls)
            w.send(frame(HEADERS, 0, 1, blk[:8]))
            n = 0
            while n < 2000 and w.send(frame(CONTINUATION, 0, 1, b"") * 100):
                n += 100
                if w.poll() or w.goaway:
                    break
            w.pump(3 * SLOW)
            w.close()
            return n
        run.during("reconnecting CONTINUATION floods; frames offered", again,
                   1.5)


@scenario
def big_headers(args):
    """Header blocks over the 16 KiB header-list limit."""
    blk = header_block()
    big = Encoder().encode([NeverIndexedHeaderTuple("x-big", "a" * 20000)],
                           huffman=False)
    many = Encoder().encode([NeverIndexedHeaderTuple(f"x-h{i}", "v" * 8)
                             for i in range(600)], huffman=False)
    # HPACK bomb: one 4000-byte field into the dynamic table, then 200
    # one-byte references to it: 800 KB of headers from 4 KB on the wire.
    enc = Encoder()
    bomb = enc.encode([("x-bomb", "z" * 4000)], huffman=False) + \
        bytes([0x80 | 62]) * 200

    def request(sid, block):
        out, first = b"", True
        while True:
            part, block = block[:16384], block[16384:]
            out += frame(HEADERS if first else CONTINUATION,
                         0 if block else END_HEADERS, sid, part)
            first = False
            if not block:
                return out + frame(DATA, END_STREAM, sid, EMPTY_MSG)

    with Run(args, "oversized header blocks (local API, h2c)", 32) as run:
        w = attacker(args, False)
        sid = 1
        for label, block in (("one 20 KB field", blk + big),
                             ("600 small fields (about 25 KB)", blk + many),
                             ("HPACK bomb (800 KB from 4 KB)", blk + bomb)):
            w.send(request(sid, block))
            w.wait(lambda: sid in w.rst or w.grpc_status(sid), 5 * SLOW)
            check(w.rst.get(sid) == "ENHANCE_YOUR_CALM" and not w.closed,
                  f"{label}: stream {sid} refused with RST_STREAM "
                  f"{w.rst.get(sid)}; the connection stays open")
            check_on(w, sid + 2, f"after the {label}")
            sid += 4
        w.close()
        # Again and again: memory stays flat, and a connection is cut off
        # once its refused streams pass the reset budget.
        codes = set()

        def again():
            w, sid, n = attacker(args, False), 1, 0
            while n < 1200 and not w.closed:
                w.send(b"".join(request(sid + 2 * k, blk + big)
                                for k in range(20)))
                sid += 40
                n += 20
                w.poll()
            w.pump(3 * SLOW)
            codes.add(w.goaway[0] if w.goaway else "no GOAWAY")
            w.close()
            return n
        run.during("20 KB header blocks on reconnecting connections; "
                   "blocks", again, 1.5)
        check(codes == {"ENHANCE_YOUR_CALM"},
              f"each connection cut off past the reset budget: "
              f"{sorted(codes)}")


@scenario
def huge_message(args):
    """A gRPC length prefix far over the message limit, then a trickle;
    and messages just under it that are never finished."""
    blk = header_block()
    with Run(args, "huge declared gRPC message (local API, h2c)", 32):
        w = attacker(args, False)
        before = vm(args.pid)
        sid = 1
        for declared in (0xFFFFFFFF, 0x80000000, (1 << 20) + 1):
            t0 = time.monotonic()
            w.send(frame(HEADERS, END_HEADERS, sid, blk) +
                   frame(DATA, 0, sid, b"\x00" + struct.pack(">I",
                                                             declared)))
            for _ in range(10):             # the trickle, 1 byte / 50 ms
                w.send(frame(DATA, 0, sid, b"x"))
                w.pump(0.05)
                if w.grpc_status(sid):
                    break
            w.wait(lambda: w.grpc_status(sid) is not None, 5 * SLOW)
            st = w.grpc_status(sid)
            check(st is not None and st[0] == 8,
                  f"{declared} bytes announced: grpc-status {st} after "
                  f"{time.monotonic() - t0:.2f} s")
            sid += 2
        after = vm(args.pid)
        grow = (after["VmPeak"] - before["VmPeak"]) // 1024
        check(grow < 512, f"no allocation of the announced size: peak "
              f"virtual size {before['VmPeak'] // 1024} -> "
              f"{after['VmPeak'] // 1024} MiB")
        check_on(w, sid, "the same connection afterwards")
        w.close()
        # Every stream opens a message just under the limit and never
        # ends it: without a per-connection bound each connection pins
        # streams x 1 MiB.
        conns, streams = 2, 32
        if SANITIZE:
            streams = 16
            say("   (instrumented node: 16 streams per connection, not 32)")
        ws, refused, t0 = [], 0, time.monotonic()
        chunk = b"\x00" * 16384
        for _ in range(conns):
            w = attacker(args, False)
            ws.append(w)
            sids = range(1, 2 * streams, 2)
            w.send(b"".join(frame(HEADERS, END_HEADERS, s, blk) +
                            frame(DATA, 0, s, b"\x00\x00\x0f\xff\xff")
                            for s in sids))
            for _ in range(63):             # 63 x 16 KiB per stream
                if not w.send(b"".join(frame(DATA, 0, s, chunk)
                                       for s in sids)):
                    break
                w.poll()
            w.pump(0.5 * SLOW)
            refused += sum(1 for s in sids if (w.grpc_status(s) or
                                               (0,))[0] == 8)
        mid = vm(args.pid)
        say(f"   {conns} connections x {streams} streams x ~1 MiB unfinished "
            f"messages ({conns * streams} MiB offered) in "
            f"{time.monotonic() - t0:.2f} s: {refused} streams refused "
            f"RESOURCE_EXHAUSTED; node RSS {mid['VmRSS']} KiB with them open")
        check(refused >= conns * (streams - 5),
              "the node keeps at most 4 partial messages' worth per "
              "connection and refuses the rest")
        for w in ws:
            w.close()


@scenario
def window_update_abuse(args):
    """WINDOW_UPDATE overflow, zero increments, and floods of them."""
    blk = header_block()
    open_stream = frame(HEADERS, END_HEADERS, 1, blk)   # no END_STREAM
    with Run(args, "WINDOW_UPDATE abuse (local API, h2c)", 32) as run:
        cases = [
            ("connection window past 2^31-1", window_update(0, 0x7FFFFFFF),
             ("FLOW_CONTROL_ERROR",), None),
            ("zero increment on the connection", window_update(0, 0),
             ("PROTOCOL_ERROR",), None),
            # A stream error the RFC lets a server treat as a connection
            # error; nghttp2 does.
            ("zero increment on a stream", open_stream + window_update(1, 0),
             ("PROTOCOL_ERROR",), "PROTOCOL_ERROR"),
            ("WINDOW_UPDATE on an idle stream", window_update(99, 1),
             ("PROTOCOL_ERROR",), None),
            ("SETTINGS_INITIAL_WINDOW_SIZE 2^31", settings([(4, 1 << 31)]),
             ("FLOW_CONTROL_ERROR",), None),
        ]
        for label, data, codes, stream_code in cases:
            w = attacker(args, False)
            w.send(data)
            w.wait(lambda: w.goaway or (stream_code and 1 in w.rst),
                   3 * SLOW)
            if stream_code and 1 in w.rst and not w.goaway:
                check(w.rst[1] == stream_code,
                      f"{label}: RST_STREAM {w.rst[1]}")
            else:
                w.pump(3 * SLOW)
                expect_cut(w, codes, label)
            w.close()
        # Stream errors: that stream is reset, the connection goes on.
        for label, data in (
                ("stream window past 2^31-1",
                 open_stream + window_update(1, 0x7FFFFFFF)),
                ("INITIAL_WINDOW_SIZE pushing a stream past 2^31-1",
                 open_stream + window_update(1, 0x7FFFFFFF - 65535) +
                 settings([(4, 65536)]))):
            w = attacker(args, False)
            w.send(data)
            w.wait(lambda: 1 in w.rst or w.goaway, 3 * SLOW)
            check(w.rst.get(1) == "FLOW_CONTROL_ERROR" or
                  (w.goaway and w.goaway[0] == "FLOW_CONTROL_ERROR"),
                  f"{label}: RST_STREAM {w.rst.get(1)}, GOAWAY {w.goaway}")
            if not w.goaway:
                check_on(w, 3, f"after the {label}")
            w.close()
        # 100,000 tiny valid updates on the connection and on a stream.
        w = attacker(args, False)
        t0 = time.monotonic()
        w.send(open_stream)
        for _ in range(100):
            w.send(window_update(0, 1) * 500 + window_update(1, 1) * 500)
            w.poll()
        say(f"   100,000 WINDOW_UPDATE frames of +1 in "
            f"{time.monotonic() - t0:.2f} s")
        check(not w.closed and w.goaway is None,
              "valid updates, however many, are no error")
        check_on(w, 3, "after the WINDOW_UPDATE flood")
        w.close()

        def again():
            w = attacker(args, False)
            w.send(window_update(0, 1) * 1000 + window_update(0, 0x7FFFFFFF))
            w.pump(3 * SLOW)
            ok = w.goaway is not None and w.goaway[0] == "FLOW_CONTROL_ERROR"
            w.close()
            return ok
        run.during("reconnecting overflows, each cut off with "
                   "FLOW_CONTROL_ERROR", again, 1)


def closed_within(sock, seconds, trickle=None):
    """Seconds until the node closed |sock|, or None; sends |trickle| one
    byte every 100 ms meanwhile."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        if trickle is not None and i < len(trickle):
            try:
                sock.sendall(trickle[i:i + 1])
            except OSError:
                return time.monotonic() - t0
            i += 1
        sock.settimeout(0.1)
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            pass
        except OSError:
            return time.monotonic() - t0
    return None


@scenario
def slow_handshake(args):
    """Clients that never finish the TLS handshake or the preface."""
    limit = args.handshake_ms / 1000
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing,
                       server_hostname="node.example")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    late = limit + 1.5 * SLOW
    with Run(args, f"slow and silent handshakes (timeout {limit:.1f} s)",
             32):
        def verdict(label, t):
            check(t is not None and limit * 0.8 <= t <= late,
                  f"{label}: closed after "
                  f"{'%.2f s' % t if t is not None else 'NEVER'}")

        s = socket.create_connection(("127.0.0.1", args.peer))
        verdict("TLS, nothing sent", closed_within(s, late + 1))
        s.close()
        s = socket.create_connection(("127.0.0.1", args.peer))
        s.sendall(hello[:len(hello) // 2])
        verdict(f"TLS, half a ClientHello ({len(hello) // 2} of "
                f"{len(hello)} bytes)", closed_within(s, late + 1))
        s.close()
        s = socket.create_connection(("127.0.0.1", args.peer))
        verdict("TLS, the ClientHello one byte per 100 ms",
                closed_within(s, late + 1, trickle=hello))
        s.close()
        s = socket.create_connection(("127.0.0.1", args.api))
        verdict("h2c, the preface one byte per 100 ms",
                closed_within(s, late + 1, trickle=PREFACE + settings()))
        s.close()
        s = tls_context(args).wrap_socket(
            socket.create_connection(("127.0.0.1", args.peer)),
            server_hostname="node.example")
        verdict("TLS done with a pinned certificate, then no preface",
                closed_within(s, late + 1))
        s.close()
        # Many at once: each gets its own deadline, all are cut off.
        n = 100
        t0 = time.monotonic()
        socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", args.peer))
            s.sendall(hello[:40])
            socks.append(s)
        open_ = set(range(n))
        while open_ and time.monotonic() - t0 < late + 1:
            for i in list(open_):
                socks[i].setblocking(False)
                try:
                    if socks[i].recv(4096) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)
            time.sleep(0.05)
        took = time.monotonic() - t0
        for s in socks:
            s.close()
        check(not open_, f"{n} stalled handshakes at once: all closed "
              f"within {took:.2f} s ({len(open_)} left open)")


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want and (hard == resource.RLIM_INFINITY or hard > soft):
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


class Crowd:
    """Many client connections, watched with one selector: when the node
    closed each (its age then) and which ones it spoke on (its SETTINGS:
    those it accepted)."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.socks, self.born, self.closed, self.spoke = [], [], {}, set()

    def open(self, port, n, payload):
        for i in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError as e:
                say(f"   connect {i} failed: {e}")
                break
            self.born.append(time.monotonic())
            if payload:
                try:
                    s.sendall(payload)
                except OSError:
                    pass
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, len(self.socks))
            self.socks.append(s)
            if i % 16 == 15:
                self.pump(0)

    def pump(self, timeout):
        for key, _ in self.sel.select(timeout):
            i, s = key.data, key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                self.spoke.add(i)
            else:
                self.closed[i] = time.monotonic() - self.born[i]
                self.sel.unregister(s)

    def watch(self, seconds):
        end = time.monotonic() + seconds
        while self.sel.get_map() and time.monotonic() < end:
            self.pump(min(0.05, max(0.0, end - time.monotonic())))

    def close(self):
        for s in self.socks:
            s.close()
        self.sel.close()


@scenario
def idle_connections(args):
    """Thousands of connections against a node with a small cap."""
    cap = args.max_connections
    want = 2000
    have = raise_nofile(want + 256)
    n = min(want, have - 256)
    if n < want:
        say(f"   (open files limited to {have}: {n} connections, "
            f"not {want})")
    with Run(args, f"{n} idle connections, cap {cap}", 48) as run:
        for label, payload, deadline in (
                ("preface and SETTINGS, then nothing",
                 PREFACE + settings(), args.idle_ms / 1000),
                ("nothing at all", b"", args.handshake_ms / 1000)):
            a0, f0 = run.probe.answered, run.probe.failed
            t0 = time.monotonic()
            crowd = Crowd()
            crowd.open(args.api, n, payload)
            opened = time.monotonic() - t0
            crowd.watch(0.2)
            # While the cap is reached a newcomer is turned away at once.
            fresh = socket.create_connection(("127.0.0.1", args.api))
            fresh_t = closed_within(fresh, 2 * SLOW)
            fresh.close()
            mid = vm(args.pid)
            crowd.watch(deadline + 2 * SLOW)
            socks = crowd.socks
            kept = sorted(crowd.closed.get(i, -1) for i in crowd.spoke)
            refused = [t for i, t in crowd.closed.items()
                       if i not in crowd.spoke]
            say(f"   {label}: {len(socks)} connections opened in "
                f"{opened:.2f} s: {len(kept)} accepted, {len(refused)} "
                f"refused (closed at {max(refused, default=0):.2f} s at "
                f"most); node RSS {mid['VmRSS']} KiB while full")
            check(cap - 3 <= len(kept) <= cap,
                  f"no more than the cap accepted ({len(kept)} of {cap}; "
                  f"the well-behaved client holds one)")
            check(len(refused) == len(socks) - len(kept) and
                  all(t < deadline * 0.8 for t in refused),
                  "every connection over the cap closed unanswered, "
                  "before any deadline")
            check(fresh_t is not None,
                  "a newcomer while full is turned away "
                  f"({fresh_t:.2f} s)" if fresh_t is not None else
                  "a newcomer while full was NOT turned away")
            check(kept and kept[0] >= deadline * 0.8 and
                  kept[-1] <= deadline + 1.5 * SLOW,
                  f"the accepted ones closed by the node at ages "
                  f"{kept[0]:.2f}-{kept[-1]:.2f} s (deadline "
                  f"{deadline:.1f} s)" if kept and kept[0] >= 0 else
                  f"accepted connections left open: {kept[:5]}")
            a, f = run.probe.answered - a0, run.probe.failed - f0
            check(a > 0 and f == 0, f"meanwhile the well-behaved client got "
                  f"{a} answers, {f} failures")
            crowd.close()


@scenario
def silent_client(args):
    """Two clients each hold a Health/Watch stream open and then send
    nothing; one answers the node's PINGs, the other has vanished (it
    reads but never answers).  The node must PING the silent one after
    one or two keepalive-ms and close it keepalive-timeout-ms later, and
    keep the one that answers."""
    ka, kt = args.keepalive_ms / 1000, args.keepalive_timeout_ms / 1000
    watch = "/grpc.health.v1.Health/Watch"
    with Run(args, f"silent clients (keepalive {ka:.1f} s + "
             f"{kt:.1f} s)", 48) as run:
        gone, alive_w = Wire(args.api), Wire(args.api)
        for w in (gone, alive_w):
            w.send(frame(SETTINGS, 0x1, 0) +
                   frame(HEADERS, END_HEADERS, 1, header_block(watch)) +
                   frame(DATA, END_STREAM, 1, EMPTY_MSG))
        for name, w in (("vanishing", gone), ("answering", alive_w)):
            got = w.wait(lambda: any(isinstance(f, DataFrame) and
                                     f.stream_id == 1 for f in w.frames),
                         5 * SLOW)
            check(got, f"the {name} client's Watch got its first status")
        t0 = time.monotonic()
        # Two full rounds of keepalive for the one that answers.
        end = t0 + 2 * (ka + kt) + 2 * SLOW
        pings_gone, answered, seen = [], 0, 0
        while time.monotonic() < end:
            gone.pump(0.01)
            alive_w.pump(0.01)
            for f in alive_w.frames[seen:]:
                if f.type == 0x6 and "ACK" not in f.flags:
                    alive_w.send(frame(0x6, 0x1, 0, f.opaque_data))
                    answered += 1
            seen = len(alive_w.frames)
        pings_gone = [f for f in gone.frames
                      if f.type == 0x6 and "ACK" not in f.flags]
        closed_at = (gone.close_time - t0) if gone.closed else None
        say(f"   vanishing client: {len(pings_gone)} PING(s), closed at "
            f"{closed_at if closed_at is None else round(closed_at, 2)} s, "
            f"GOAWAY {gone.goaway}; answering client: {answered} PING(s) "
            f"answered, {'closed' if alive_w.closed else 'open'}")
        check(len(pings_gone) == 1, "the vanishing client was sent one PING")
        # The node looks every keepalive-ms: silence is noticed between
        # one and two of them after the last byte.
        check(closed_at is not None and
              (ka + kt) * 0.8 <= closed_at <= 2 * ka + kt + 2 * SLOW,
              f"the vanishing client was cut off after one or two keepalive "
              f"periods and the timeout ({ka + kt:.1f}-{2 * ka + kt:.1f} s): "
              f"at {closed_at} s")
        check(gone.goaway is not None and gone.goaway[0] == "NO_ERROR",
              f"with a GOAWAY NO_ERROR ({gone.goaway})")
        check(not alive_w.closed and answered >= 2,
              f"the answering client is still connected after "
              f"{time.monotonic() - t0:.1f} s ({answered} PINGs answered)")
        alive_w.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
        check_on(alive_w, 3, "the answering client's connection")
        gone.close()
        alive_w.close()


@scenario
def public_listener(args):
    """The internet-facing listener: HTTPS pages and forms, no gRPC, no
    client certificate.  Rapid resets, a CONTINUATION flood and many
    unfinished form bodies at once."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    get = raw_block([(":method", "GET"), (":scheme", "https"),
                     (":path", "/static/permit.css"),
                     (":authority", "127.0.0.1")])
    post = raw_block([(":method", "POST"), (":scheme", "https"),
                      (":path", "/c/no-such-token"),
                      (":authority", "127.0.0.1"),
                      ("content-type", "application/x-www-form-urlencoded"),
                      ("origin", "https://127.0.0.1")])

    def http_status(w, sid):
        for h in w.headers.get(sid, []):
            if ":status" in h:
                return h[":status"]
        return None

    with Run(args, "public listener (HTTPS, web pages only)", 32) as run:
        w = Wire(args.public, ctx)
        w.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, get))
        w.wait(lambda: http_status(w, 1), 5 * SLOW)
        check(http_status(w, 1) == "200", f"a page: GET /static/permit.css "
              f"answered {http_status(w, 1)}")
        n, took = flood(w, lambda s: frame(HEADERS, END_HEADERS | END_STREAM,
                                           s, get) + rst(s), 20000, 5)
        say(f"   {n} x (GET, RST_STREAM) in {took:.2f} s")
        expect_cut(w, ("ENHANCE_YOUR_CALM",), "rapid reset")
        w.close()
        # Form bodies that never end: a connection holds 64 KiB of them.
        w = Wire(args.public, ctx)
        sids = range(1, 33, 2)
        w.send(b"".join(frame(HEADERS, END_HEADERS, s, post) +
                        frame(DATA, 0, s, b"a=" + b"b" * 7998)
                        for s in sids))
        w.wait(lambda: sum(1 for s in sids if http_status(w, s)) >= 8,
               5 * SLOW)
        busy = [s for s in sids if http_status(w, s) == "503"]
        held = [s for s in sids if http_status(w, s) is None]
        check(len(held) == 8 and len(busy) == len(sids) - 8 and not w.closed,
              f"{len(sids)} unfinished 8 KB form bodies at once: {len(held)} "
              f"kept, {len(busy)} answered 503")
        w.close()
        w = Wire(args.public, ctx)
        w.send(frame(HEADERS, 0, 1, get[:4]))
        n = 0
        while n < 100000 and w.send(frame(CONTINUATION, 0, 1, b"") * 100):
            n += 100
            if w.poll() or w.goaway:
                break
        w.pump(3 * SLOW)
        say(f"   CONTINUATION flood: {n} empty frames offered")
        expect_cut(w, ("ENHANCE_YOUR_CALM",), "CONTINUATION flood")
        w.close()

        def again():
            w = Wire(args.public, ctx)
            n, _ = flood(w, lambda s: frame(HEADERS,
                                            END_HEADERS | END_STREAM, s,
                                            get) + rst(s), 5000, 2)
            w.close()
            return n
        run.during("reconnecting rapid resets over HTTPS; streams offered",
                   again, 1.5)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--api", type=int, required=True)
    ap.add_argument("--peer", type=int)
    ap.add_argument("--public", type=int)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--tls", action="store_true",
                    help="attack the peer listener over TLS")
    ap.add_argument("--handshake-ms", type=int, default=500)
    ap.add_argument("--idle-ms", type=int, default=1500)
    ap.add_argument("--max-connections", type=int, default=64)
    ap.add_argument("--keepalive-ms", type=int, default=1000)
    ap.add_argument("--keepalive-timeout-ms", type=int, default=1000)
    args = ap.parse_args()
    if SANITIZE:
        say("(instrumented node: waits are 4x longer, memory bounds 3x)")
    SCENARIOS[args.scenario](args)
    if failures:
        say(f"{len(failures)} check(s) failed in {args.scenario}")
        sys.exit(1)


if __name__ == "__main__":
    main()
