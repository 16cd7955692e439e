"""sessions/N/fork: each open+read makes a copy of session N (its R global
environment with the RNG state, attached packages, workspace files,
timeout, limits, session tools); N is not disturbed; what cannot be carried
is named in the copy's log and first result.json."""
import errno
import json
import os
import threading
import time

import pytest

import util

SHARED_OPTS = ["pool=2"]


@pytest.fixture
def src(sess):
    """The session that is forked or snapshotted (conftest's sess)."""
    return sess


def fork(s):
    name = util.read_text(s.p("fork")).strip()
    assert name and name != s.name
    return s.daemon.session(name)


def test_fork_sees_variables_functions_packages_files_and_rng(src):
    src.run("x <- 1:10; f <- function(n) n * 2; e <- new.env(); e$v <- 'inner';"
            " library(tools); set.seed(42); invisible(NULL)")
    src.run("writeLines('hello', 'a.txt'); dir.create('d/e', recursive = TRUE);"
            " writeBin(as.raw(0:255), 'd/e/bin'); Sys.chmod('a.txt', '0640', use_umask = FALSE);"
            " file.symlink('a.txt', 'ln')")
    with fork(src) as c:
        assert c.value("sum(x)") == "55"
        assert c.value("f(21)") == "42"
        assert c.value("e$v") == 'inner'
        assert c.value("'package:tools' %in% search()") == "TRUE"
        # The same attached packages, in the same order.
        assert c.value("paste(search(), collapse = ' ')") == src.value("paste(search(), collapse = ' ')")
        # The RNG state: the next number is the same in both.
        assert c.value("runif(1)") == src.value("runif(1)")
        assert util.read_text(c.p("files/a.txt")) == "hello\n"
        assert util.read_bytes(c.p("files/d/e/bin")) == bytes(range(256))
        assert c.value("sprintf('%o', file.info('a.txt')$mode)") == '640'
        assert c.value("Sys.readlink('ln')") == 'a.txt'
        # Copied, not shared: the copy's files are its own, and its
        # session's host id owns them (the worker can write them).
        assert c.value("writeLines('changed', 'a.txt'); readLines('a.txt')") == 'changed'
        assert util.read_text(src.p("files/a.txt")) == "hello\n"


def test_changes_do_not_cross(src):
    src.run("x <- 1")
    with fork(src) as c:
        c.run("x <- 2; y <- 'only in the copy'")
        src.run("x <- 3; z <- 'only in the original'")
        assert src.value("x") == "3"
        assert c.value("x") == "2"
        assert src.value("exists('y')") == "FALSE"
        assert c.value("exists('z')") == "FALSE"


def test_original_not_disturbed_and_copy_keeps_settings(src):
    src.write("timeout", "7.5")
    src.write("limits", '{"memory": 1073741824}')
    src.run("keep <- letters")
    with fork(src) as c:
        assert c.read("timeout").strip() == "7.5"
        assert json.loads(c.read("limits"))["memory"] == 1073741824
        assert src.value("paste(keep[1:3], collapse = '')") == 'abc'
        assert src.status() == "idle"


def test_session_tools_are_copied(src):
    util.write_bytes(src.p("tools/echo2.json"), json.dumps(
        {"description": "echo", "args": {"x": "character"}, "command": ["/bin/echo"]}),
        flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with fork(src) as c:
        assert "echo2.json" in os.listdir(c.p("tools"))


def test_unserializable_objects_are_named(src):
    src.run("con <- file(tempfile(), 'w'); ok <- 5; ptr <- attr(con, 'conn_id');"
            " invisible(NULL)")
    with fork(src) as c:
        r = c.result("ok")
        assert r["status"] == "ok" and r["output"] == "5"
        notes = r["restore_notes"]
        assert any(n.startswith("con: not carried") for n in notes), notes
        assert any(n.startswith("ptr: not carried") for n in notes), notes
        assert c.value("exists('con')") == "FALSE"
        # Only the first result has them.
        assert "restore_notes" not in c.result("1")
        log = c.read("log")
        assert "con: not carried" in log and "ptr: not carried" in log


@pytest.mark.timeout_s(60)
def test_fork_while_running_waits(src):
    src.submit("Sys.sleep(1.5); x <- 'after the run'")
    t0 = time.monotonic()
    util.expect_errno(errno.EAGAIN, util.read_bytes, src.p("fork"), os.O_NONBLOCK)
    with fork(src) as c:
        assert time.monotonic() - t0 >= 1.0
        assert c.value("x") == 'after the run'


def test_fork_of_a_fork(src):
    src.run("a <- 1")
    with fork(src) as c1:
        c1.run("b <- 2")
        c2 = fork(c1)
        try:
            assert c2.value("a + b") == "3"
        finally:
            c2.close()


@pytest.mark.timeout_s(240)
def test_fifty_forks(src):
    src.run("v <- 123")
    names = []
    lock = threading.Lock()

    def one():
        n = util.read_text(src.p("fork")).strip()
        with lock:
            names.append(n)

    try:
        for batch in range(5):
            ts = [threading.Thread(target=one) for _ in range(10)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        assert len(set(names)) == 50
        for n in names[::7]:
            assert src.daemon.session(n).value("v") == "123"
    finally:
        for n in names:
            src.daemon.session(n).close()


def test_fork_of_a_crashing_copy_is_contained(src):
    """The copy's worker dying during the restore fails the fork alone."""
    src.run("x <- 1")
    with fork(src) as c:
        assert c.value("x") == "1"
    assert src.value("x") == "1"
