"""Workers do not share their stack canary (issue 16 item 6; docs/security.md,
"What workers share").  Every worker is a fork of one zygote; each now gives
itself a fresh canary (%fs:0x28) and fresh AT_RANDOM bytes first thing, so a
session's native code (the probe stands for it) learns nothing about another
session's.  R's own code (libR.so is built with -fstack-protector-strong)
then runs every frame against the new canary: deep calls, errors that
unwind, tool calls all work.
"""
import json
import os

import util
from jailtools import value

TOOL = ["/usr/bin/python3", "-c", "import json, sys; print(json.dumps(json.load(sys.stdin)['x'] * 2))"]


def secrets(s, so):
    """(canary, first 8 bytes at AT_RANDOM) of the session's worker."""
    v = value(s, "dyn.load('%s'); r <- .C('probe_secrets', c = double(2), a = double(2)); c(r$c, r$a)" % so)
    return (int(v[0]) << 32) | int(v[1]), (int(v[2]) << 32) | int(v[3])


def test_each_worker_has_its_own_canary(daemons, probe_dir):
    so = str(probe_dir / "probe.so")
    d = daemons.start("pool=2", "r_libs=%s" % probe_dir)
    util.write_bytes(d.path("tools", "twice_it.json"),
                     json.dumps({"description": "x times 2", "args": {"x": "numeric"}, "command": TOOL,
                                 "mode": "exec"}), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    sessions = [d.clone() for _ in range(3)]
    seen = [secrets(s, so) for s in sessions]
    canaries = [c for c, _ in seen]
    randoms = [a for _, a in seen]
    assert len(set(canaries)) == 3, [hex(c) for c in canaries]
    assert len(set(randoms)) == 3, [hex(a) for a in randoms]
    for c in canaries:
        assert c & 0xff == 0, hex(c)  # the lowest byte zero, as glibc makes it
        assert c >> 8 != 0, hex(c)
    # A run still works with the new canary: deep R calls (through libR's
    # protected C frames), an error that unwinds them, a tool call.
    s = sessions[0]
    assert value(s, "f <- function(n) if (n > 0) f(n - 1) + 1 else 0; f(400)") == [400]
    r = s.result("g <- function(n) if (n > 0) g(n - 1) else stop('deep error'); g(300)")
    assert r["status"] == "error" and "deep error" in r["error"], r
    assert value(s, "tryCatch(g(100), error = function(e) conditionMessage(e))") == ["deep error"]
    assert value(s, "twice_it(x = 21)") == [42]
    assert value(s, "x <- lapply(1:200, function(i) sum(rnorm(100))); length(x)") == [200]
    assert value(s, "png(); plot(1:10); invisible(dev.off()); jsonlite::toJSON(list(a = 1:3))") == ['{"a":[1,2,3]}']
    # Its canary did not change under it; a restarted worker gets a new one.
    assert secrets(s, so)[0] == canaries[0]
    s.write("ctl", "restart")
    assert s.value("1") == "1"
    assert secrets(s, so)[0] not in canaries
    for x in sessions:
        x.close()
