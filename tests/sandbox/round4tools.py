"""What tests/sandbox/test_round4.py shares: the snapshot container as
docs/protocol.md describes it (to craft hostile ones), and finding a
session's worker from the host."""
import json
import struct

import util

MAGIC = b"SRFSNAP\n"


def take(s):
    data = util.read_bytes(s.p("snapshot"))
    assert data.startswith(MAGIC)
    return data


def put(s, data):
    util.write_bytes(s.p("snapshot"), data)


def parse(data):
    """(meta, [(kind, path, mode, data_offset, data_len)])."""
    version, mlen = struct.unpack(">II", data[8:16])
    assert version == 1
    meta = json.loads(data[16:16 + mlen])
    off = 16 + mlen
    recs = []
    while True:
        kind, _pad, plen, mode, dlen = struct.unpack(">cBHIQ", data[off:off + 16])
        path = data[off + 16:off + 16 + plen].decode()
        recs.append((kind, path, mode, off + 16 + plen, dlen))
        off += 16 + plen + dlen
        if kind == b"E":
            break
    assert off == len(data)
    return meta, recs


def record(kind, path=b"", mode=0, payload=b""):
    return struct.pack(">cBHIQ", kind, 0, len(path), mode, len(payload)) + path + payload


def rebuild(meta, body):
    m = json.dumps(meta).encode()
    return MAGIC + struct.pack(">II", 1, len(m)) + m + body


def r_blob(data):
    """(meta, the R record's bytes) of a snapshot."""
    meta, recs = parse(data)
    k, _, _, off, n = recs[0]
    assert k == b"R"
    return meta, data[off:off + n]


def worker_of(d, before):
    """The one session worker of daemon d that is not in before."""
    new = list(set(util.session_worker_pids(d.pid)) - set(before))
    assert len(new) == 1, new
    return new[0]
