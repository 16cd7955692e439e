"""Smoke tests of the minimal jail (the sandbox issue has the full escape
suite).  Each denial is checked inside (what R saw) and, where there is one,
outside (the host shows no effect)."""
import os

import pytest

from harness import Daemons

SECRET = "securerfs-test-secret-8d1f"


@pytest.fixture(scope="module")
def jailed(tmp_path_factory):
    ds = Daemons(tmp_path_factory.mktemp("jail"))
    yield ds.start("pool=0", env={"SECRET_MARKER": SECRET})
    ds.check()


@pytest.fixture
def js(jailed):
    with jailed.clone() as s:
        yield s


def test_hostname(js):
    assert js.run("Sys.info()[['nodename']]") == "securerfs\n"


def test_host_dirs_hidden(js):
    assert js.run("file.exists('/home')") == "FALSE\n"
    assert js.run("file.exists('/root')") == "FALSE\n"


def test_usr_read_only(js):
    out = js.run("tryCatch({ writeLines('x', '/usr/securerfs-probe'); 'written' },"
                 " warning = function(w) conditionMessage(w),"
                 " error = function(e) conditionMessage(e))")
    assert out != "written\n", out
    assert not os.path.exists("/usr/securerfs-probe")
    assert js.run("file.exists('/usr/securerfs-probe')") == "FALSE\n"


def test_tmp_writable_and_private(js, jailed):
    assert js.run("writeLines('in-jail', '/tmp/jail-probe.txt'); "
                  "readLines('/tmp/jail-probe.txt')") == "in-jail\n"
    host = "/tmp/jail-probe.txt"
    assert not (os.path.exists(host) and open(host).read() == "in-jail\n")
    other = jailed.clone()
    try:
        assert other.run("file.exists('/tmp/jail-probe.txt')") == "FALSE\n"
    finally:
        other.close()


def test_mount_invisible(js, jailed):
    mnt = str(jailed.mnt)
    assert js.run("file.exists('%s')" % mnt) == "FALSE\n"
    assert js.run("file.exists('%s')" % os.path.dirname(mnt)) == "FALSE\n"
    out = js.run("if (file.exists('/proc/self/mountinfo')) any(grepl('%s', "
                 "readLines('/proc/self/mountinfo'), fixed = TRUE) | "
                 "grepl('fuse', readLines('/proc/self/mountinfo'), fixed = TRUE)) else FALSE"
                 % os.path.basename(os.path.dirname(mnt)))
    assert out == "FALSE\n"


def test_environment_scrubbed(js):
    assert js.run("Sys.getenv('SECRET_MARKER')") == "\n"
    assert js.run("any(grepl('%s', Sys.getenv(), fixed = TRUE))" % SECRET) == "FALSE\n"
    assert js.run("Sys.getenv('HOME')") == "/work\n"


def test_no_network(js):
    out = js.run("tryCatch({ con <- socketConnection('1.1.1.1', 80, timeout = 2); "
                 "close(con); 'connected' }, error = function(e) 'refused',"
                 " warning = function(w) 'refused')")
    assert out == "refused\n"


def test_pid_namespace(js):
    assert js.run("Sys.getpid()") == "1\n"


def test_sandbox_none_runs(daemons):
    d = daemons.start("pool=0", "sandbox=none")
    assert d.json("config")["sandbox"] == "none"
    s = d.clone()
    assert s.run("1+1") == "2\n"
    assert s.run("x <- 3; x * 2") == "6\n"
