/* The machine's floor for a run through a file, for scripts/bench: the
 * least a FUSE file system can take for what `eval` kept open asks of it.
 *
 *   floorfs MOUNTPOINT          one file, /f: a write is taken, a read
 *                               answers a short line at once
 *   floorfs MOUNTPOINT hop      the same, but each read first asks a second
 *                               process over a socket pair and answers with
 *                               its reply, as securerfs asks its worker
 *
 * The client's pwrite() and pread() of /f (roundtrip MNT floor) are the two
 * FUSE requests of a run through eval; with "hop", the one hop to another
 * process that a run in a worker needs.  Nothing else is done: no R, no
 * JSON, no epoll, no sandbox.  So the figure is what this machine's kernel
 * and CPUs cost for that much, which no design of securerfs's kind can go
 * under (docs/performance.md, "The machine's floor").
 *
 * libfuse's low-level API and its single-threaded loop, in the foreground;
 * fusermount3 -u ends it. */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_INO 2

static const char answer[] = "{\"status\":\"ok\",\"output\":\"2\"}\n";
static int hop_fd = -1; /* the daemon's end of the socket pair, with "hop" */

static void fill_attr(fuse_ino_t ino, struct stat *st) {
        memset(st, 0, sizeof(*st));
        st->st_ino = ino;
        st->st_nlink = ino == FUSE_ROOT_ID ? 2 : 1;
        st->st_mode = ino == FUSE_ROOT_ID ? S_IFDIR | 0755 : S_IFREG | 0666;
        st->st_uid = getuid();
        st->st_gid = getgid();
}

static void floor_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct fuse_entry_param e = {.ino = FILE_INO, .attr_timeout = 3600, .entry_timeout = 3600};

        if (parent != FUSE_ROOT_ID || strcmp(name, "f") != 0) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        fill_attr(FILE_INO, &e.attr);
        fuse_reply_entry(req, &e);
}

static void floor_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct stat st;

        (void)fi;
        if (ino != FUSE_ROOT_ID && ino != FILE_INO) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        fill_attr(ino, &st);
        fuse_reply_attr(req, &st, 3600);
}

/* Direct I/O, as securerfs's eval: every read and write is a request. */
static void floor_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        if (ino != FILE_INO) {
                fuse_reply_err(req, EISDIR);
                return;
        }
        fi->direct_io = 1;
        fuse_reply_open(req, fi);
}

static void floor_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                        struct fuse_file_info *fi) {
        (void)ino, (void)buf, (void)off, (void)fi;
        fuse_reply_write(req, size);
}

static void floor_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
        char buf[256];
        ssize_t n = (ssize_t)sizeof(answer) - 1;

        (void)ino, (void)fi;
        memcpy(buf, answer, (size_t)n);
        if (hop_fd >= 0) {
                if (send(hop_fd, "r", 1, MSG_NOSIGNAL) != 1 || (n = recv(hop_fd, buf, sizeof(buf), 0)) <= 0) {
                        fuse_reply_err(req, EIO);
                        return;
                }
        }
        if (off >= n) {
                fuse_reply_buf(req, NULL, 0);
                return;
        }
        n -= off;
        fuse_reply_buf(req, buf + off, (size_t)n < size ? (size_t)n : size);
}

static const struct fuse_lowlevel_ops ops = {
        .lookup = floor_lookup,
        .getattr = floor_getattr,
        .open = floor_open,
        .read = floor_read,
        .write = floor_write,
};

/* The second process of "hop": answers each byte asked with the line. */
static void serve_hops(int fd) {
        char c;

        while (recv(fd, &c, 1, 0) == 1)
                if (send(fd, answer, sizeof(answer) - 1, MSG_NOSIGNAL) < 0)
                        break;
        _exit(0);
}

int main(int argc, char **argv) {
        char *fuse_argv[] = {argv[0], NULL};
        struct fuse_args args = FUSE_ARGS_INIT(1, fuse_argv);
        struct fuse_session *se;
        int sv[2], r;

        if (argc < 2 || (argc > 2 && strcmp(argv[2], "hop") != 0)) {
                fprintf(stderr, "usage: floorfs MOUNTPOINT [hop]\n");
                return 2;
        }
        if (argc > 2) {
                if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                        perror("floorfs: socketpair");
                        return 1;
                }
                switch (fork()) {
                case -1: perror("floorfs: fork"); return 1;
                case 0: close(sv[0]); serve_hops(sv[1]);
                }
                close(sv[1]);
                hop_fd = sv[0];
        }
        se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
        if (!se || fuse_session_mount(se, argv[1]) != 0) {
                fprintf(stderr, "floorfs: cannot mount %s\n", argv[1]);
                return 1;
        }
        r = fuse_session_loop(se);
        fuse_session_unmount(se);
        fuse_session_destroy(se);
        fuse_opt_free_args(&args);
        return r < 0 ? 1 : 0;
}
