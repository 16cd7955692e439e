"""The nodes of files/ hold no descriptor each (round 3, finding 2;
docs/security.md, "Round 3: the host side of the boundary"): every node is
found again as its name in its parent, one component at a time beneath the
workspace's root, its inode checked, and only a bounded cache of directories
keeps descriptors.  Here: the daemon's descriptors stay bounded through a
deep tree, an inode-based use (an open directory) outlives the cache, a
host-side rename keeps an open directory usable, and a directory the code
swaps for a link to a host directory, once out of the cache, leads nowhere
(ESTALE) while the host directory stays untouched."""
import contextlib
import errno
import os

import pytest

import util

SHARED_OPTS = ("pool=1",)
DEPTH = 150       # well beyond the cache (fs/files_node.h: FILES_DIR_CACHE)
EVICT = 300       # directories looked up to push the others out of the cache


@contextlib.contextmanager
def open_dir(path):
    """A descriptor of the directory path (O_RDONLY | O_DIRECTORY) for the
    block: an inode-based use of its node, closed when the block ends."""
    fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def evict(s):
    """Look up EVICT directories of the session (made once) from the host."""
    if not s.files("evict").exists():
        s.ok("dir.create('evict'); for (i in 1:%d) dir.create(sprintf('evict/e%%03d', i)); 1" % EVICT)
    for i in range(1, EVICT + 1):
        assert s.files("evict", "e%03d" % i).is_dir()


@pytest.mark.timeout_s(120)
def test_deep_tree_keeps_descriptors_bounded_and_works(shared):
    with shared.clone() as s, shared.clone() as w:
        assert w.value("witness <- 7") == "7"
        before = util.fd_count(shared.pid)
        s.ok("p <- paste(rep('d', %d), collapse = '/'); dir.create(p, recursive = TRUE); "
             "writeLines('bottom', file.path(p, 'x.txt')); 1" % DEPTH)
        bottom = s.files(*(["d"] * DEPTH))
        # A walk of the whole chain from the host, then a read and a write at
        # the bottom through paths.
        assert sum(1 for _ in os.walk(s.files())) == DEPTH + 1
        assert (bottom / "x.txt").read_text() == "bottom\n"
        (bottom / "y.txt").write_text("from the host\n")
        # An inode-based use of the bottom once the cache has moved on: the
        # node is found again through all DEPTH components.
        with open_dir(bottom) as fd:
            evict(s)
            assert os.fstat(fd).st_nlink >= 2
            assert sorted(os.listdir(fd)) == ["x.txt", "y.txt"]
            os.close(os.open("z.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        assert s.ok("sort(list.files(p))")["value"] == ["x.txt", "y.txt", "z.txt"]
        held = util.fd_count(shared.pid)
        assert held < before + 100, "the daemon went from %d to %d descriptors" % (before, held)
        # Outside: a new session and the witness are unaffected.
        n = shared.clone()
        assert n.value("1+1") == "2"
        n.close()
        assert w.value("witness") == "7"


@pytest.mark.timeout_s(90)
def test_host_rename_keeps_an_open_directory(shared):
    with shared.clone() as s:
        s.ok("dir.create('old/inner', recursive = TRUE); 1")
        with open_dir(s.files("old", "inner")) as fd:
            os.rename(s.files("old"), s.files("new"))
            evict(s)
            os.fstat(fd)
            os.close(os.open("made.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        assert s.ok("file.exists('new/inner/made.txt')")["value"] is True


@pytest.mark.timeout_s(90)
def test_directory_swapped_for_a_link_leads_nowhere(shared, tmp_path):
    """The code renames a directory the host has open and puts a link to a
    host directory in its place (one holding a same-named subdirectory).
    Re-resolving the open directory's node must not follow the link."""
    host = tmp_path / "hostdir"
    (host / "inner").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(host, 0o777)
    os.chmod(host / "inner", 0o777)
    with shared.clone() as s:
        s.ok("dir.create('a/inner', recursive = TRUE); 1")
        with open_dir(s.files("a", "inner")) as fd:
            s.ok("file.rename('a', 'a_old'); file.symlink('%s', 'a'); 1" % host)
            evict(s)
            # Inside the daemon's view: the name 'a' holds a link now, not
            # the directory the node was: the kernel is told the node is
            # stale.
            with pytest.raises(OSError) as e:
                os.close(os.open("planted.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
            assert e.value.errno == errno.ESTALE, e.value
            with pytest.raises(OSError) as e:
                os.mkdir("planted_dir", dir_fd=fd)
            assert e.value.errno == errno.ESTALE, e.value
            # Through a path, the link reads as ELOOP (absolute).
            with pytest.raises(OSError) as e:
                os.listdir(s.files("a", "inner"))
            assert e.value.errno == errno.ELOOP, e.value
        # Outside: the host directory is as it was.
        assert sorted(os.listdir(host)) == ["inner"]
        assert os.listdir(host / "inner") == []
        assert s.ok("list.files('a_old/inner')")["value"] == []
