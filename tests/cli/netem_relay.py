#!/usr/bin/python3
"""netem_relay.py - a stand-in for tc netem on kernels built without it
(CONFIG_NET_SCH_NETEM unset): one point-to-point link between two network
namespaces, made of a TUN device in each, with the packets carried by
this process and netem's faults applied to them in both directions.

usage: netem_relay.py NS_A DEV_A NS_B DEV_B DIR

Makes DEV_A in the namespace NS_A and DEV_B in NS_B (names as given to
`ip netns add`), writes DIR/ready, and carries packets until SIGTERM.
The caller gives the devices their addresses and brings them up.

DIR/mode holds the link's faults in tc netem's words, e.g.
  delay 40ms 20ms distribution normal loss 5% reorder 25% 50% duplicate 1%
  loss 100%        (a partition)
  (empty)          (a clean link)
Each direction gets them on its own, as netem on both ends of a veth
pair would.  When a new mode is in force the relay writes it to DIR/ack.
DIR/stats (JSON) counts what was done: written at every mode change and
at the end.
"""
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
QUEUE_LIMIT = 1000  # netem's default limit, in packets


def tun_open(ns, dev):
    """A TUN device |dev| in the namespace |ns| (this process moves there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    nsfd = os.open("/run/netns/" + ns, os.O_RDONLY)
    if libc.setns(nsfd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns %s: %s" % (ns, os.strerror(err)))
    os.close(nsfd)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def percent(word):
    return float(word.rstrip("%")) / 100.0


def millis(word):
    if word.endswith("us"):
        return float(word[:-2]) / 1000.0
    if word.endswith("ms"):
        return float(word[:-2])
    if word.endswith("s"):
        return float(word[:-1]) * 1000.0
    return float(word)


def parse(line):
    """netem's parameters from |line|; raises ValueError on a word it does not know."""
    p = {"delay": 0.0, "jitter": 0.0, "loss": 0.0, "reorder": 0.0,
         "reorder_corr": 0.0, "duplicate": 0.0}
    w = line.split()
    i = 0

    def more(j):
        return j < len(w) and w[j][0].isdigit()

    while i < len(w):
        k = w[i]
        if k == "delay":
            p["delay"] = millis(w[i + 1])
            i += 2
            if more(i):
                p["jitter"] = millis(w[i])
                i += 1
        elif k == "distribution":
            if w[i + 1] != "normal":
                raise ValueError("only the normal distribution is known")
            i += 2
        elif k in ("loss", "duplicate"):
            p[k] = percent(w[i + 1])
            i += 2
        elif k == "reorder":
            p["reorder"] = percent(w[i + 1])
            i += 2
            if more(i):
                p["reorder_corr"] = percent(w[i])
                i += 1
        else:
            raise ValueError("unknown netem word %r" % k)
    return p


class Direction:
    """One way of the link: its own random state, as one netem qdisc."""

    def __init__(self, name):
        self.name = name
        self.reorder_last = 0.0

    def reorder_now(self, p):
        # netem's correlated random: a weighted mean with the last value.
        rho = p["reorder_corr"]
        v = (1.0 - rho) * random.random() + rho * self.reorder_last
        self.reorder_last = v
        return v < p["reorder"]


def main():
    if len(sys.argv) != 6:
        sys.exit("usage: netem_relay.py NS_A DEV_A NS_B DEV_B DIR")
    ns_a, dev_a, ns_b, dev_b, cdir = sys.argv[1:]
    fa = tun_open(ns_a, dev_a)
    fb = tun_open(ns_b, dev_b)
    peer = {fa: fb, fb: fa}
    way = {fa: Direction(ns_a + "->" + ns_b), fb: Direction(ns_b + "->" + ns_a)}
    mode_path = os.path.join(cdir, "mode")
    stats = {"packets": 0, "sent": 0, "lost": 0, "duplicated": 0,
             "reordered": 0, "overflow": 0, "modes": []}
    params = parse("")
    mode_seen = None
    queue = []  # (due, n, fd, packet)
    n = 0
    next_look = 0.0

    def write_json(name, obj):
        tmp = os.path.join(cdir, name + ".new")
        with open(tmp, "w") as f:
            json.dump(obj, f)
        os.rename(tmp, os.path.join(cdir, name))

    def finish(signum, frame):
        write_json("stats", stats)
        sys.exit(0)

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    with open(os.path.join(cdir, "ready"), "w") as f:
        f.write("%d\n" % os.getpid())

    while True:
        text = mode_seen
        if time.monotonic() >= next_look:
            # Looked at every 10 ms, whatever the traffic.
            next_look = time.monotonic() + 0.01
            try:
                with open(mode_path) as f:
                    text = f.read().strip()
            except FileNotFoundError:
                text = ""
        if text != mode_seen:
            params = parse(text)
            mode_seen = text
            if params["loss"] >= 1.0:
                queue = []  # a cut link delivers nothing it held
            stats["modes"].append(text)
            write_json("stats", stats)
            tmp = os.path.join(cdir, "ack.new")
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.rename(tmp, os.path.join(cdir, "ack"))
        now = time.monotonic()
        wait = 0.01
        if queue:
            wait = max(0.0, min(wait, queue[0][0] - now))
        ready, _, _ = select.select([fa, fb], [], [], wait)
        now = time.monotonic()
        for fd in ready:
            while True:
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                stats["packets"] += 1
                if params["loss"] > 0 and random.random() < params["loss"]:
                    stats["lost"] += 1
                    continue
                copies = 1
                if params["duplicate"] > 0 and random.random() < params["duplicate"]:
                    copies = 2
                    stats["duplicated"] += 1
                for _ in range(copies):
                    if len(queue) >= QUEUE_LIMIT:
                        stats["overflow"] += 1
                        continue
                    due = now
                    if params["reorder"] > 0 and way[fd].reorder_now(params):
                        stats["reordered"] += 1  # sent at once, ahead of the delayed
                    elif params["delay"] > 0 or params["jitter"] > 0:
                        d = random.gauss(params["delay"], params["jitter"])
                        due = now + max(0.0, d) / 1000.0
                    n += 1
                    heapq.heappush(queue, (due, n, peer[fd], pkt))
        while queue and queue[0][0] <= now:
            _, _, out, pkt = heapq.heappop(queue)
            try:
                os.write(out, pkt)
                stats["sent"] += 1
            except OSError:
                pass  # the device is down: the packet is lost


if __name__ == "__main__":
    main()
