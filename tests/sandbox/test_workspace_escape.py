"""Escape attempts through the workspace (/work inside, sessions/N/files/
outside), each proved from both sides like the rest of the suite."""
import errno
import os

import util
from test_escape import failed, ok, sc, still_fine, value, warned


def test_links_to_host_files_lead_nowhere(sess, jail, witness, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-SECRET-42\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret, 0o644)
    rel = os.path.relpath(secret, "/work")
    ok(sess, "file.symlink(%r, 'abs'); file.symlink(%r, 'rel'); file.symlink('/proc/1/root/etc', 'proc')"
       % (str(secret), rel))
    # Inside: the host path does not exist in the jail.
    assert value(sess, "file.exists(c('abs', 'rel'))") == [False, False]
    # Outside: the links are shown, never followed, neither by the daemon
    # nor (through readlink) by the reader's kernel.
    f = sess.dir / "files"
    for name in ("abs", "rel", "proc"):
        assert os.path.islink(f / name)
        util.expect_errno(errno.ELOOP, util.read_bytes, f / name)
    util.expect_errno(errno.ELOOP, util.read_bytes, f / "proc" / "passwd")
    assert secret.read_text() == "HOST-SECRET-42\n"
    still_fine(jail, witness)


def test_hard_links_and_renames_out_of_work(sess, jail, witness):
    r = ok(sess, "writeLines('t', '/tmp/t'); c(file.link('/usr/lib/R/etc/Renviron', 'a'),"
                 " file.link('/etc/passwd', 'b'), file.link('/tmp/t', 'c'), file.link('/proc/self/environ', 'd'),"
                 " file.rename('/tmp/t', '/work/t'))")
    assert r["value"] == [False] * 5
    assert warned(r, "cross-device"), r
    assert sorted(os.listdir(sess.dir / "files")) == []
    still_fine(jail, witness)


def test_workspace_mount_cannot_be_changed(sess, jail, witness):
    line = [x for x in value(sess, "readLines('/proc/self/mountinfo')") if " /work " in x]
    assert len(line) == 1, line
    assert "nosuid" in line[0] and "nodev" in line[0] and "noexec" in line[0] and "tmpfs" in line[0]
    assert sc(sess, jail, "umount2", 0, 2)[1] == errno.EPERM
    assert sc(sess, jail, "mount", 0, 0, 0, 4096)[1] == errno.EPERM
    assert sc(sess, jail, "open_tree", -100, 0, 1)[1] == errno.EPERM
    # The workspace is still there and still the session's.
    ok(sess, "writeLines('still', 'here.txt')")
    assert util.read_text(sess.dir / "files" / "here.txt") == "still\n"
    still_fine(jail, witness)


def test_no_code_runs_from_work(sess, jail, witness):
    r = failed(sess, "file.copy(Sys.glob('/usr/lib/*/libc.so.6')[1], 'libc.so'); dyn.load('libc.so')")
    assert "libc.so" in r["error"]
    assert "failed to map segment" in r["error"] or "Operation not permitted" in r["error"], r
    still_fine(jail, witness)


def test_other_sessions_workspaces_are_invisible(sess, jail, witness):
    ok(witness, "writeLines('mine', 'witness-file.txt')")
    try:
        assert value(sess, "list.files('/work', all.files = TRUE, no.. = TRUE)") == []
        assert value(sess, "length(list.files(c('/tmp', '/work', '/etc'), pattern = 'witness',"
                           " recursive = TRUE, all.files = TRUE))") == [0]
        assert os.listdir(sess.dir / "files") == []
        assert "witness-file.txt" in os.listdir(witness.dir / "files")
    finally:
        os.unlink(witness.dir / "files" / "witness-file.txt")
    still_fine(jail, witness)
