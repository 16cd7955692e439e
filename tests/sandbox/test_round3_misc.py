"""Round 3, finding 9 (docs/security.md, "Round 3: the daemon's loop and the
worker between runs"): R's own message for code R_ParseVector raises an
error on, /proc's remaining host leaks masked, no core dump of a worker
whatever the host's core_pattern."""
import os

import util

ROUND3_MASKED = ["config.gz", "devices", "consoles", "cgroups", "buddyinfo", "zoneinfo", "dma", "mtrr", "misc",
                 "crypto", "program_cpu"]


def test_mixed_escapes_give_rs_own_message(sess, witness):
    """Inside: R's own message, error_kind syntax, nothing ran.  Outside:
    the session and the witness go on."""
    r = sess.result('x <- "\\u00e9\\x41"')
    assert r["status"] == "error" and r["error_kind"] == "syntax", r
    assert "mixing Unicode and octal/hex escapes" in r["error"], r
    assert "out of memory" not in r["error"], r
    assert sess.value("exists('x')") == "FALSE"
    assert witness.value("witness_var") == "41"


def test_round3_proc_entries_show_nothing(sess, witness):
    """Inside: each entry the host has reads as empty.  Outside: the host's
    own entry still has its content (the mask is the jail's)."""
    names = [n for n in ROUND3_MASKED if os.path.lexists("/proc/" + n)]
    assert "devices" in names and "cgroups" in names, names
    code = ("f <- c(%s); I(f[vapply(f, function(p) length(readBin(file.path('/proc', p), 'raw', 1e6)), 0) > 0])"
            % ", ".join("'%s'" % n for n in names))
    assert sess.result(code)["value"] == []
    with open("/proc/devices") as f:
        assert "Character devices" in f.read()
    assert witness.value("witness_var") == "41"


def test_worker_cannot_dump_core(sess, jail, witness):
    """Outside: the worker's RLIMIT_CORE is 1 byte, soft and hard (the
    kernel aborts a pipe handler's dump at 1 and ignores 0); the code cannot
    lift it (seccomp refuses setrlimit and prlimit64 with a new limit:
    tests/unit/test_seccomp.c); a worker that crashes on SIGSYS leaves no
    core file in /work, its working directory.  Inside: the next run finds
    a fresh worker and the workspace without a core file."""
    assert sess.value("kept <- 1; 1") == "1"
    before = set(util.session_worker_pids(jail.pid))
    checked = 0
    for pid in before:
        # A pool worker may be replaced between the listing and the read.
        try:
            with open("/proc/%d/limits" % pid) as f:
                line = [l for l in f if l.startswith("Max core file size")][0]
        except FileNotFoundError:
            continue
        assert line.split()[4:6] == ["1", "1"], line
        checked += 1
    assert checked >= 1, before
    # The seccomp filter's kill (SIGSYS, a signal that dumps core): the
    # worker is pid 1 of its namespace, so it cannot signal itself.
    r = sess.result("dyn.load('%s'); .C('probe_x32', ret = integer(1), err = integer(1))" % jail.probe)
    assert r["status"] == "crashed", r
    assert sess.value("any(grepl('^core', list.files('/work', all.files = TRUE)))") == "FALSE"
    assert witness.value("witness_var") == "41"
