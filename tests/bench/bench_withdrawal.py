#!/usr/bin/python3
"""Withdrawal propagation on loopback (run by run-withdrawal-bench.sh).

Opts N buyers in through Checkout/RecordOptIn, timing each until the
venue's WatchContacts stream reports it "subscribed" (the baseline), then
withdraws each through Buyer/Withdraw with its consent-link token, one at
a time, timing until the stream reports it "unsubscribed".  Prints p50,
p99 and max of both, and their ratio.
"""
import argparse
import os
import threading
import time

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
import grpc  # noqa: E402

from permit.v1 import service_pb2 as svc  # noqa: E402


def unary(ch, path, req, resp_cls):
    return ch.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp_cls.FromString)(req, timeout=30)


class Feed(threading.Thread):
    """Notes when each record id is first seen with each change kind."""

    def __init__(self, ch, since):
        super().__init__(daemon=True)
        self.cv = threading.Condition()
        self.seen = {}
        req = svc.WatchContactsRequest(since=since)
        self.stream = ch.unary_stream(
            "/permit.v1.Venue/WatchContacts",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=svc.ContactChange.FromString)(req)

    def run(self):
        try:
            for ch in self.stream:
                now = time.monotonic()
                key = (ch.kind, bytes(ch.contact.record_id))
                with self.cv:
                    self.seen.setdefault(key, now)
                    self.cv.notify_all()
        except grpc.RpcError:
            pass

    def wait(self, kind, rid, deadline=30.0):
        end = time.monotonic() + deadline
        with self.cv:
            while (kind, rid) not in self.seen:
                left = end - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no {kind} change for {rid.hex()} in {deadline} s")
                self.cv.wait(left)
            return self.seen[(kind, rid)]


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reseller", required=True)
    ap.add_argument("--venue", required=True)
    ap.add_argument("--count", type=int, default=1000)
    a = ap.parse_args()
    rch = grpc.insecure_channel(a.reseller)
    vch = grpc.insecure_channel(a.venue)
    offers = unary(rch, "/permit.v1.Checkout/ListOffers",
                   svc.ListOffersRequest(venue="fillmore.example"), svc.ListOffersResponse)
    version = offers.lists[0].notice_version
    feed = Feed(vch, 0)
    feed.start()
    optin_lat, wd_lat, ack_lat, buyers = [], [], [], []
    for i in range(a.count):
        req = svc.RecordOptInRequest(order_ref=f"B-{i}", email=f"buyer{i}@example.com",
                                     given_name="Bench", family_name=str(i),
                                     venue="fillmore.example", list_id="newsletter",
                                     notice_version=version)
        t0 = time.monotonic()
        r = unary(rch, "/permit.v1.Checkout/RecordOptIn", req, svc.RecordOptInResponse)
        rid = bytes(r.record_id)
        optin_lat.append(feed.wait("subscribed", rid) - t0)
        buyers.append((rid, r.consent_link.rsplit("/c/", 1)[1]))
    for rid, token in buyers:
        t0 = time.monotonic()
        w = unary(rch, "/permit.v1.Buyer/Withdraw",
                  svc.WithdrawRequest(token=token, record_id=rid), svc.WithdrawResponse)
        ack_lat.append(time.monotonic() - t0)
        if not w.changed:
            raise SystemExit(f"withdrawal of {rid.hex()} changed nothing")
        wd_lat.append(feed.wait("unsubscribed", rid) - t0)
    ms = lambda s: s * 1000.0  # noqa: E731
    print(f"buyers: {a.count}")
    for name, v in (("opt-in to venue feed (baseline)", optin_lat),
                    ("withdraw call, durable ack", ack_lat),
                    ("withdraw call to venue feed", wd_lat)):
        print(f"{name}: p50 {ms(pct(v, 50)):.1f} ms, p99 {ms(pct(v, 99)):.1f} ms, "
              f"max {ms(max(v)):.1f} ms")
    print(f"withdrawal / opt-in propagation: p50 ratio {pct(wd_lat, 50) / pct(optin_lat, 50):.2f}, "
          f"p99 ratio {pct(wd_lat, 99) / pct(optin_lat, 99):.2f}")
    print(f"target p99 under 1 s: {'met' if pct(wd_lat, 99) < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
