"""What leaves the sandbox is data, never a lever (issue 16 items 1, 3, 5;
issue 9's names and log lines; issue 10's small items): no set-id or sticky
bit reaches the host, no link leads a walker back to its own directory, no
terminal control sequence reaches a file read with cat or the daemon's log,
names with control characters cross escaped and are taken back exactly, and
the strict parsers of timeout and ctl.

Every check is harmless when the fix is missing: the files carrying set-id
bits hold a few plain bytes (nothing that could run), copies are made in the
test's own directory and removed with it, and host tools run with a
timeout."""
import errno
import json
import os
import shutil
import stat
import subprocess
import time

import pytest

import util

SHARED_OPTS = ("pool=2",)
# Refused ctl, timeout and tool writes are logged (escaped), one of them
# carrying a forged "error:" of its own.
SHARED_EXPECT = [r"ctl: unknown command", r"timeout: expected", r"tools/.*refused"]

SETID = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def worker_view(d, s, name):
    """The path of the session's /work/name as the worker's own mount
    namespace has it (/proc/PID/root/work), or None when no worker shows it
    to us.  Used to give a file set-id bits from outside the sandbox, and to
    see its real mode, whatever the sandbox lets the code do."""
    for pid in util.session_worker_pids(d.pid):
        p = "/proc/%d/root/work/%s" % (pid, name)
        try:
            os.lstat(p)
            return p
        except OSError:
            continue
    return None


def host_modes(path):
    """Every mode the host side sees for path: stat, lstat, and the mode a
    directory listing's entry reports."""
    st = os.stat(path)
    lst = os.lstat(path)
    with os.scandir(os.path.dirname(path)) as it:
        ent = [e for e in it if e.name == os.path.basename(path)][0]
        est = ent.stat(follow_symlinks=False)
    return [st.st_mode, lst.st_mode, est.st_mode]


# ---------------------------------------------------------------- 16.1 set-id bits


def check_setid_masked(s, tmp_path, real_mode):
    """The file report.csv and the directory sd carry set-id/sticky bits
    underneath (real_mode(name) says so when it can); the host sees none of
    them, and nothing a host tool copies keeps them."""
    f = s.files()
    for name, kind in (("report.csv", stat.S_IFREG), ("sd", stat.S_IFDIR)):
        real = real_mode(name)
        for m in host_modes(str(f / name)):
            assert stat.S_IFMT(m) == kind
            assert m & SETID == 0, "%s shown with mode %o (underneath: %s)" % (name, m, real)
    # cp -a and tar keep the modes they are shown; the copies have no bit.
    dest = tmp_path / "copied"
    dest.mkdir()
    r = subprocess.run(["cp", "-a", str(f / "report.csv"), str(f / "sd"), str(dest)],
                       capture_output=True, text=True, timeout=util.scaled(20))
    assert r.returncode == 0, r.stderr
    for name in ("report.csv", "sd"):
        m = os.lstat(dest / name).st_mode
        assert m & SETID == 0, "cp -a made %s with mode %o" % (name, m)
    tarball = tmp_path / "w.tar"
    r = subprocess.run(["tar", "-C", str(f), "-cf", str(tarball), "report.csv", "sd"],
                       capture_output=True, text=True, timeout=util.scaled(20))
    assert r.returncode == 0, r.stderr
    listing = subprocess.run(["tar", "-tvf", str(tarball)], capture_output=True, text=True,
                             timeout=util.scaled(20)).stdout
    for line in listing.splitlines():
        perms = line.split()[0]
        assert "s" not in perms.lower() and "t" not in perms.lower(), line
    shutil.rmtree(dest)
    tarball.unlink()


@pytest.mark.timeout_s(60)
def test_setid_bits_never_reach_the_host(shared, sess, tmp_path):
    """The issue's attack, with plain bytes instead of /usr/bin/id: the code
    makes report.csv mode 6777 and a sticky, set-gid directory.  Whether the
    sandbox lets that chmod happen (the seccomp filter may refuse set-id
    modes), the bits are also set from outside, through the worker's own
    view of /work, so that the host side is tested with them present.  Root
    always has that view; an unprivileged test has it while the worker is
    dumpable, else the code's own chmod (if the sandbox allowed it) is what
    is tested, and test_setid_bits_masked_in_none_mode covers the rest."""
    r = sess.result('writeBin(charToRaw("a,b\\n1,2\\n"), "report.csv"); dir.create("sd");'
                    'c(Sys.chmod("report.csv", "6777", use_umask = FALSE),'
                    '  Sys.chmod("sd", "3777", use_umask = FALSE))')
    assert r["status"] in ("ok", "error"), r
    for name, mode in (("report.csv", 0o6777), ("sd", 0o3777)):
        p = worker_view(shared, sess, name)
        if p is None:
            assert os.getuid() != 0, "root sees no worker's /work/%s" % name
            continue
        os.chmod(p, mode)
        assert os.lstat(p).st_mode & 0o7777 == mode
    inside = sess.value('c(format(file.info("report.csv")$mode), format(file.info("sd")$mode))')
    check_setid_masked(sess, tmp_path, lambda n: inside)
    if os.getuid() == 0:
        # The file is still the code's own: R sees its bits.
        assert inside == '[1] "6777" "3777"', inside
    assert util.read_bytes(sess.files("report.csv")) == b"a,b\n1,2\n"


@pytest.mark.timeout_s(60)
def test_setid_bits_masked_in_none_mode(daemons, tmp_path):
    """No sandbox: the code's chmod certainly happens; the mount still shows
    no bit."""
    d = daemons.start("pool=0", "sandbox=none")
    s = d.clone()
    r = s.ok('writeBin(charToRaw("x"), "report.csv"); dir.create("sd");'
              'Sys.chmod("report.csv", "6777", use_umask = FALSE); Sys.chmod("sd", "3777", use_umask = FALSE);'
              'c(format(file.info("report.csv")$mode), format(file.info("sd")$mode))')
    assert r["value"] == ["6777", "3777"], r
    check_setid_masked(s, tmp_path, lambda n: "6777/3777 (R says)")
    s.close()


def test_chmod_from_the_host_sets_permission_bits_only(sess):
    sess.ok('writeLines("x", "f"); dir.create("d"); 1')
    os.chmod(sess.files("f"), 0o6755)
    os.chmod(sess.files("d"), 0o1777)
    assert stat.S_IMODE(os.stat(sess.files("f")).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(sess.files("d")).st_mode) == 0o777
    # Underneath too: the daemon never set the bits.
    assert sess.value('c(format(file.info("f")$mode), format(file.info("d")$mode))') == '[1] "755" "777"'
    # mkdir and create from the host: rwx bits only, whatever was asked.
    os.mkdir(sess.files("d2"), 0o3777)
    fd = os.open(sess.files("f2"), os.O_WRONLY | os.O_CREAT, 0o6777)
    os.close(fd)
    assert sess.value('bitwAnd(as.integer(file.info(c("d2", "f2"))$mode), strtoi("7000", 8L))') == "[1] 0 0"


# ---------------------------------------------------------------- 16.3 links that lead back


DOT_LINKS = 'dir.create("d"); for (n in c("a", "b", "c")) file.symlink(".", file.path("d", n)); 1'


@pytest.mark.timeout_s(120)
def test_links_to_dot_do_not_trap_host_tools(sess, tmp_path):
    """The issue's three links to "." (3^40 paths for a tool that follows
    them): each reads as ELOOP, and find -L, du -L, grep -R, cp -rL and ls -RL
    over files/ all end, quickly."""
    sess.ok(DOT_LINKS + '; writeLines("needle", "d/hay.txt"); dir.create("sub"); writeLines("deep", "sub/in.txt");'
             'file.symlink("sub", "d_sub"); file.symlink("./", "d/e"); file.symlink("./.", "d/f");'
             'file.symlink(".//./", "d/g"); 1')
    f = sess.files()
    for n in "abcefg":
        assert stat.S_ISLNK(os.lstat(f / "d" / n).st_mode)
        util.expect_errno(errno.ELOOP, os.readlink, f / "d" / n)
        util.expect_errno(errno.ELOOP, os.stat, f / "d" / n)
    # A link that goes down still works.
    assert os.readlink(f / "d_sub") == "sub"
    assert util.read_text(f / "d_sub" / "in.txt") == "deep\n"
    copy = tmp_path / "copy"
    tools = [["find", "-L", str(f)], ["du", "-L", "-s", str(f)], ["grep", "-R", "needle", str(f)],
             ["cp", "-rL", str(f), str(copy)], ["ls", "-RL", str(f)]]
    for cmd in tools:
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=util.scaled(20))
        except subprocess.TimeoutExpired:
            pytest.fail("%s did not end within %.0f s" % (" ".join(cmd), util.scaled(20)))
        assert time.monotonic() - t0 < util.scaled(20)
        # They complain about the refused links (exit 1, grep 2) but walk
        # the rest.
        assert r.returncode in (0, 1, 2), (cmd, r.returncode, r.stderr[-500:])
        assert len(r.stdout) < 100000, cmd
    assert "needle" in subprocess.run(["grep", "-R", "needle", str(f)], capture_output=True, text=True,
                                      timeout=util.scaled(20)).stdout
    assert (copy / "d" / "hay.txt").read_text() == "needle\n"
    assert (copy / "d_sub" / "in.txt").read_text() == "deep\n"
    assert not (copy / "d" / "a").exists()
    shutil.rmtree(copy)
    # Python's own walker, following links, ends too.
    seen = sum(len(fs) for _, _, fs in os.walk(f, followlinks=True))
    assert 0 < seen < 100


def test_symlink_from_the_host(shared, sess):
    sess.ok('dir.create("sub"); writeLines("in", "sub/x"); 1')
    f = sess.files()
    # Links readlink would give are made; R sees them.
    os.symlink("sub/x", f / "to_x")
    os.symlink("sub", f / "to_sub")
    assert os.readlink(f / "to_x") == "sub/x"
    assert util.read_text(f / "to_sub" / "x") == "in\n"
    assert sess.value('paste(Sys.readlink("to_x"), readLines("to_x"))') == "sub/x in"
    # Anything that could lead out or back is refused, nothing is made.
    for target in ("/etc/passwd", "../x", "sub/../../x", ".", "./", "./.", ""):
        util.expect_errno((errno.EPERM, errno.ENOENT), os.symlink, target, f / "bad")
        assert not os.path.lexists(f / "bad")
    # A target with a control character is given in its shown spelling.
    os.symlink("\\x1bdir/x", f / "esc_link")
    assert sess.value('Sys.readlink("esc_link") == "\\033dir/x"') == "TRUE"
    util.expect_errno(errno.EINVAL, os.symlink, "a\x1bb", f / "raw_esc")
    # Outside files/ the tree is the daemon's.
    util.expect_errno(errno.EPERM, os.symlink, "x", sess.dir / "lnk")
    util.expect_errno(errno.EPERM, os.symlink, "x", shared.path("tools", "lnk.json"))
    util.expect_errno(errno.EPERM, os.symlink, "x", shared.path("lnk"))


def test_hard_link_from_the_host(shared, sess):
    sess.ok('writeLines("one", "a.txt"); dir.create("dd"); file.symlink("a.txt", "l"); 1')
    f = sess.files()
    os.link(f / "a.txt", f / "dd" / "b.txt")
    assert os.stat(f / "a.txt").st_ino == os.stat(f / "dd" / "b.txt").st_ino
    assert os.stat(f / "a.txt").st_nlink == 2
    assert sess.value('readLines("dd/b.txt")') == "one"
    os.link(f / "l", f / "l2", follow_symlinks=False)  # a link to the link itself
    assert os.readlink(f / "l2") == "a.txt"
    util.expect_errno(errno.EPERM, os.link, f / "dd", f / "dd2")
    other = shared.clone()
    try:
        util.expect_errno(errno.EXDEV, os.link, f / "a.txt", other.files("stolen.txt"))
        util.expect_errno(errno.EXDEV, os.link, f / "a.txt", shared.path("tools", "t.json"))
    finally:
        other.close()
    util.expect_errno((errno.EPERM, errno.EXDEV), os.link, sess.p("status"), sess.dir / "st2")


# ---------------------------------------------------------------- 16.5 terminal controls

ATTACK = r'cat("\033]0;PWNED\007\033[2J", intToUtf8(0x9b), "31m\r\b\n", sep = "")'


@pytest.mark.timeout_s(60)
def test_text_files_carry_no_control_sequences(sess):
    r = sess.result(ATTACK + r'; message("\033]52;c;b3duZWQ=\007"); x <- "\033[1mbold\007\ttab"; x')
    assert r["status"] == "ok", r
    # result.json keeps the exact text (JSON escapes C0; C1 is valid JSON).
    assert r["console"].startswith("\x1b]0;PWNED\x07\x1b[2J\x9b31m\r\b\n")
    assert "\x1b]52;c;b3duZWQ=\x07" in r["console"]
    assert r["output"] == "\x1b[1mbold\x07\ttab"
    console = util.read_bytes(sess.p("console"))
    assert console.startswith(b"\\x1b]0;PWNED\\x07\\x1b[2J\\u009b31m\\x0d\\x08\n"), console
    assert b"\\x1b]52;c;b3duZWQ=\\x07\n" in console
    assert util.read_bytes(sess.p("output")) == b"\\x1b[1mbold\\x07\ttab\n"
    for name in ("console", "output", "log", "result.json"):
        data = util.read_bytes(sess.p(name))
        assert not any(b < 0x20 and b not in (0x0a, 0x09) or b == 0x7f for b in data), (name, data[:200])
        assert b"\xc2\x9b" not in data or name == "result.json", name
    # An error message too.
    r = sess.result(r'stop("\033]0;PWNED\007", intToUtf8(0x85), "end")')
    assert r["status"] == "error" and "\x1b]0;PWNED\x07\x85end" in r["error"], r
    err = util.read_bytes(sess.p("error"))
    assert b"\\x1b]0;PWNED\\x07\\u0085end" in err and b"\x1b" not in err and b"\xc2\x85" not in err, err


@pytest.mark.timeout_s(60)
def test_log_file_escapes_c1_and_del(sess):
    code = 'z <- "\x7f\u009b"; 3'  # raw DEL and CSI: the code itself is logged (run_start)
    sess.submit(code)
    sess.result()
    log = util.read_bytes(sess.p("log"))
    assert b"\x7f" not in log and b"\xc2\x9b" not in log, log[-300:]
    lines = [json.loads(l) for l in log.decode().splitlines()]
    # Still the same JSON: the code reads back exactly.
    assert any(e.get("code") == code for e in lines), lines[-3:]


@pytest.mark.timeout_s(60)
def test_console_escaped_as_it_grows(sess):
    """Read while the run prints: the file shows escapes from the first
    control character on, and what was read stays a prefix of the final
    file (tail -f works)."""
    sess.submit('cat("plain line\\n"); Sys.sleep(0.5); cat("\\033[2J after\\n"); Sys.sleep(0.5);'
                'cat("more \\033]0;t\\007\\n"); Sys.sleep(1.5); 1')
    seen = []
    deadline = time.monotonic() + util.scaled(10)
    while time.monotonic() < deadline:
        data = util.read_bytes(sess.p("console"))
        if not seen or data != seen[-1]:
            seen.append(data)
        if b"more" in data:
            break
        time.sleep(0.05)
    assert sess.result()["status"] == "ok"
    final = util.read_bytes(sess.p("console"))
    assert final == b"plain line\n\\x1b[2J after\nmore \\x1b]0;t\\x07\n", final
    assert len(seen) >= 2, seen
    for part in seen:
        assert final.startswith(part), (part, final)
        assert b"\x1b" not in part


# ---------------------------------------------------------------- 16.5 / 9.6 names


NAMES = {
    # name made by R (an R string expression) -> how files/ shows it
    '"a\\033[2Jb"': "a\\x1b[2Jb",
    '"line\\nbreak\\r"': "line\\x0abreak\\x0d",
    '"-rf"': "\\x2drf",
    '"back\\\\slash"': "back\\x5cslash",
    'rawToChar(as.raw(c(0xff, 0x41)))': "\\xffA",
    'paste0("csi", intToUtf8(0x9b))': "csi\\xc2\\x9b",
    '"caf\\u00e9 \\u20ac"': "caf\u00e9 \u20ac",
    '"plain.txt"': "plain.txt",
}


@pytest.mark.timeout_s(60)
def test_names_are_shown_escaped_and_taken_back(sess):
    code = "; ".join('writeLines("%d", %s)' % (i, expr) for i, expr in enumerate(NAMES)) + "; 1"
    r = sess.ok(code)
    f = sess.files()
    listed = os.listdir(f)
    assert sorted(listed) == sorted(NAMES.values()), listed
    for i, shown in enumerate(NAMES.values()):
        # Every name the listing gives leads to its file.
        assert util.read_text(f / shown) == "%d\n" % i, shown
        assert stat.S_ISREG(os.lstat(f / shown).st_mode)
    # result.json's files: every one of them, escaped the same way (names
    # that are not UTF-8 used to be dropped).
    assert sorted(r["files"]) == sorted(NAMES.values()), r["files"]
    # ls prints them as they are shown: no control byte reaches the terminal.
    out = subprocess.run(["ls", "-1", str(f)], capture_output=True, timeout=util.scaled(10)).stdout
    assert not any(b < 0x20 and b != 0x0a for b in out) and b"\xc2\x9b" not in out, out
    # rm of the shown name removes the right file.
    os.unlink(f / "\\x2drf")
    assert sess.value('file.exists("-rf")') == "FALSE"
    # The host creates and renames by shown names; R sees the real ones.
    util.write_bytes(f / "from\\x0ahost", b"h", os.O_WRONLY | os.O_CREAT)
    os.mkdir(f / "dir\\x1b")
    os.rename(f / "from\\x0ahost", f / "dir\\x1b" / "moved\\x09tab")
    assert sess.value('readLines("dir\\033/moved\\ttab")') == "h"
    os.unlink(f / "dir\\x1b" / "moved\\x09tab")
    os.rmdir(f / "dir\\x1b")
    assert sess.value('file.exists("dir\\033")') == "FALSE"


def test_ambiguous_or_raw_names_from_the_host_are_refused(sess):
    sess.ok('writeLines("A", "A"); 1')
    f = sess.files()
    for bad in ("raw\x1bname", "raw\nname", "-leading", "\\x41", "\\x1B", "lone\\", "bad\\xzz", "nul\\x00",
                "slash\\x2fx", "\xc2\x9bc1"):
        util.expect_errno(errno.EINVAL, util.write_bytes, f / bad, b"x", os.O_WRONLY | os.O_CREAT)
        util.expect_errno(errno.EINVAL, os.mkdir, f / bad)
        util.expect_errno(errno.EINVAL, os.rename, f / "A", f / bad)
        # A lookup of it names nothing (it cannot be the shown form of a file).
        util.expect_errno(errno.ENOENT, os.lstat, f / bad)
    # unlink looks the name up first: nothing by that name.
    util.expect_errno(errno.ENOENT, os.unlink, f / "-leading")
    assert sorted(os.listdir(f)) == ["A"]
    assert sess.value("list.files(all.files = TRUE, no.. = TRUE)") == "A"


@pytest.mark.timeout_s(60)
def test_longest_name_shown_within_fuse_name_max(sess):
    """255 bytes that all need escaping are shown as 1020; the kernel's FUSE
    takes names up to FUSE_NAME_MAX (1024): readdir, lookup, open, rename and
    unlink all work."""
    r = sess.ok('n <- strrep("\\033", 255); writeLines("long", n); 1')
    f = sess.files()
    shown = "\\x1b" * 255
    assert len(shown) == 1020
    assert os.listdir(f) == [shown]
    assert r["files"] == [shown]
    assert util.read_text(f / shown) == "long\n"
    out = subprocess.run(["ls", "-l", str(f)], capture_output=True, text=True, timeout=util.scaled(10))
    assert out.returncode == 0 and shown in out.stdout, out
    os.rename(f / shown, f / "short")
    os.rename(f / "short", f / shown)
    os.unlink(f / shown)
    assert sess.value("length(list.files(all.files = TRUE, no.. = TRUE))") == "0"


def test_link_text_shown_escaped(sess):
    sess.ok('dir.create("\\033d"); writeLines("t", "\\033d/-x"); file.symlink("\\033d/-x", "l"); 1')
    f = sess.files()
    assert os.readlink(f / "l") == "\\x1bd/\\x2dx"
    assert util.read_text(f / "l") == "t\n"


# ---------------------------------------------------------------- 9.6 the daemon's log


def stderr_lines_since(d, n):
    return d.stderr().splitlines()[n:]


def test_ctl_junk_is_refused_whole_and_logged_on_one_line(shared, sess):
    sess.run("y <- 1")
    before = len(shared.stderr().splitlines())
    forged = "restart\nsecurerfs: error: forged line \x1b[2J"
    util.expect_errno(errno.EINVAL, sess.write, "ctl", forged)
    util.expect_errno(errno.EINVAL, sess.write, "ctl", "restart\nrestart")
    util.expect_errno(errno.EINVAL, sess.write, "ctl", "restart \n")
    util.expect_errno(errno.EINVAL, sess.write, "ctl", "interrupt\n\n")
    assert sess.run("y") == "1\n"  # nothing was done
    time.sleep(0.2)
    new = stderr_lines_since(shared, before)
    mine = [l for l in new if "ctl: unknown command" in l and "session %s:" % sess.name in l]
    assert len(mine) == 4, new
    assert not any(l.startswith("securerfs: error: forged") for l in new), new
    assert any("restart\\x0asecurerfs: error: forged line \\x1b[2J" in l for l in mine), mine
    raw = shared.log_path.read_bytes()
    assert b"\x1b[2J" not in raw
    # Exactly the commands, one trailing newline allowed.
    sess.write("ctl", "interrupt\n")
    sess.write("ctl", "restart")
    assert sess.run("exists('y')") == "FALSE\n"


def test_refused_tool_file_name_logged_on_one_line(shared):
    before = len(shared.stderr().splitlines())
    bad = shared.path("tools", "x\nsecurerfs: error: forged.json")
    try:
        util.write_bytes(bad, '{"description": "", "args": {}, "command": ["/bin/true"]}',
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError as e:
        assert e.errno == errno.EINVAL
    time.sleep(0.2)
    new = stderr_lines_since(shared, before)
    assert not any(l.startswith("securerfs: error: forged") for l in new), new
    assert any("x\\x0asecurerfs: error: forged.json" in l and "refused" in l for l in new), new
    errors = [json.loads(l) for l in util.read_text(shared.path("tools", ".errors")).splitlines()]
    assert any(e.get("tool") == "x\nsecurerfs: error: forged.json" for e in errors), errors


# ---------------------------------------------------------------- 10.4 timeout


@pytest.mark.parametrize("good,shown", [("5", "5\n"), ("15\n", "15\n"), ("2.5", "2.5\n"), ("0", "0\n"),
                                        ("007", "7\n"), ("0.000000001", "0.000000001\n")])
def test_timeout_plain_decimal(sess, good, shown):
    sess.write("timeout", good)
    assert sess.read("timeout") == shown


@pytest.mark.parametrize("bad", ["0x10", "1e-9", "1E3", "5\0", "5\0junk", " 5", "5 ", "5\n\n", "5\r\n", "+5",
                                 ".5", "5.", "5.5.5", "\n", "inf", "10000001"])
def test_timeout_refuses_anything_else(shared, sess, bad):
    sess.write("timeout", "12")
    util.expect_errno(errno.EINVAL, sess.write, "timeout", bad)
    assert sess.read("timeout") == "12\n"
