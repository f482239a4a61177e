#!/usr/bin/python3
"""Small byte-level helpers for tests/cli/test_withdrawal.sh.

  withdrawal_util.py ciphertext PROOF.json
      the hex of the sealed contact's ciphertext in the proof's signed
      record: SignedRecord.body(1) -> Record.opt_in(10) ->
      OptIn.sealed_contact(7) -> SealedContact.ciphertext(6)
  withdrawal_util.py find HEX DIR...
      prints every file under the DIRs holding those bytes; exits 0 when
      there is one, 1 when there is none
  withdrawal_util.py watch HOST:PORT RECORD_HEX...
      Venue/WatchContacts from the start on the venue's local API (h2c):
      one JSON line per change (change, kind, status, email, record) until
      the "erased" changes of all the RECORD_HEXes came; exits 1 when they
      have not come within 15 s
  withdrawal_util.py buyer HOST:PORT list|erase TOKEN
  withdrawal_util.py buyer HOST:PORT withdraw TOKEN RECORD_HEX
      permit.v1.Buyer on the reseller's local API (h2c): JSON lines, one
      per consent (record, venue, list, state) for list, the response for
      erase and withdraw; on an error status "status NAME" on stdout, exit 1
  withdrawal_util.py retime TOKEN
      the token with its expiry field moved into the past (tag untouched):
      what someone would try to make an old link look current or a
      current one expired
"""
import base64
import json
import os
import sys


def varint(b, i):
    v = shift = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def pairs(msg):
    """(number, value) of every field of |msg| in order: ints for varints,
    bytes for length-delimited fields."""
    i = 0
    while i < len(msg):
        key, i = varint(msg, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(msg, i)
            yield num, v
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        elif wt == 2:
            n, i = varint(msg, i)
            if i + n > len(msg):
                raise ValueError("truncated field %d" % num)
            yield num, msg[i:i + n]
            i += n
        else:
            raise ValueError("wire type %d" % wt)


def fields(msg):
    """{number: last value} of |msg|."""
    return dict(pairs(msg))


def field(msg, number):
    """The bytes of the last length-delimited field |number| of |msg|."""
    f = fields(msg).get(number)
    if not isinstance(f, bytes):
        raise ValueError("no field %d" % number)
    return f


def ciphertext(path):
    p = json.load(open(path))
    signed = base64.b64decode(p["signed_record"])
    ct = field(field(field(field(signed, 1), 10), 7), 6)
    if len(ct) < 32:
        raise ValueError("a ciphertext of %d bytes is too short to search" % len(ct))
    return ct.hex()


def find(needle, dirs):
    hits = []
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                path = os.path.join(root, f)
                try:
                    with open(path, "rb") as fh:
                        if needle in fh.read():
                            hits.append(path)
                except OSError:
                    pass  # a file that went away while walking
    return hits


def watch(addr, records):
    import grpc  # only this command needs it
    ch = grpc.insecure_channel(addr)
    call = ch.unary_stream("/permit.v1.Venue/WatchContacts",
                           request_serializer=lambda b: b,
                           response_deserializer=lambda b: b)
    stream = call(b"", timeout=15)  # WatchContactsRequest{since: 0}
    try:
        for m in stream:
            c = fields(m)  # ContactChange{change=1, kind=2, contact=3}
            e = fields(c.get(3, b""))  # ContactEntry
            line = {"change": c.get(1, 0),
                    "kind": c.get(2, b"").decode(),
                    "status": e.get(12, b"").decode(),
                    "email": e.get(1, b"").decode(),
                    "record": e.get(7, b"").hex()}
            print(json.dumps(line), flush=True)
            if line["kind"] == "erased":
                records.discard(line["record"])
            if not records:
                stream.cancel()
                return 0
    except grpc.RpcError as err:
        sys.stderr.write("WatchContacts: %s %s\n" % (err.code(), err.details()))
    return 1


def string(tag, s):
    b = s.encode()
    return bytes([tag]) + enc_varint(len(b)) + b


def enc_varint(v):
    out = bytearray()
    while True:
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7


def buyer(addr, what, token, record_hex=None):
    import grpc
    ch = grpc.insecure_channel(addr)
    method = {"list": "ListConsents", "erase": "Erase", "withdraw": "Withdraw"}[what]
    call = ch.unary_unary("/permit.v1.Buyer/" + method,
                          request_serializer=lambda b: b,
                          response_deserializer=lambda b: b)
    req = string(0x0A, token)  # token = 1 in all three requests
    if record_hex is not None:
        rid = bytes.fromhex(record_hex)
        req += bytes([0x12, len(rid)]) + rid  # WithdrawRequest.record_id = 2
    try:
        resp = call(req, timeout=15)
    except grpc.RpcError as err:
        print("status %s" % err.code().name)
        sys.stderr.write("Buyer/%s: %s %s\n" % (method, err.code(), err.details()))
        return 1
    if what == "list":
        for num, c in pairs(resp):  # ListConsentsResponse.consents = 1
            if num != 1:
                continue
            f = fields(c)  # Consent
            print(json.dumps({"record": f.get(4, b"").hex(),
                              "venue": f.get(1, b"").decode(),
                              "list": f.get(2, b"").decode(),
                              "state": f.get(9, b"").decode()}))
    elif what == "erase":
        f = fields(resp)
        print(json.dumps({"records": f.get(1, 0), "venues": f.get(2, 0)}))
    else:
        f = fields(resp)
        print(json.dumps({"changed": bool(f.get(1, 0))}))
    return 0


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def retime(token):
    raw = bytearray(b64url_decode(token))
    # kind (1) || expiry_ms (8, big-endian) || payload || tag (16)
    raw[1:9] = (1000).to_bytes(8, "big")
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def main(argv):
    if len(argv) == 3 and argv[1] == "ciphertext":
        print(ciphertext(argv[2]))
        return 0
    if len(argv) >= 4 and argv[1] == "find":
        hits = find(bytes.fromhex(argv[2]), argv[3:])
        for h in hits:
            print(h)
        return 0 if hits else 1
    if len(argv) >= 4 and argv[1] == "watch":
        return watch(argv[2], set(argv[3:]))
    if len(argv) in (5, 6) and argv[1] == "buyer" and \
            argv[3] in ("list", "erase", "withdraw") and \
            (len(argv) == 6) == (argv[3] == "withdraw"):
        return buyer(*argv[2:])
    if len(argv) == 3 and argv[1] == "retime":
        print(retime(argv[2]))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
