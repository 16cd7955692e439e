/* A private securerfs for one securerfs-mcp process, as the R client starts
 * one (r/securerfs/R/mount.R): the daemon runs in the foreground as our
 * child, on a mount point in a temporary directory of our own (0700), and
 * is ended when we end.
 *
 * Nothing here waits: private_mount_start() forks and returns, the
 * server's loop asks private_mount_ready() until the mount answers (or
 * the daemon died, or the deadline passed), and reads the daemon's stderr
 * through private_mount_log_fd() (copied to our stderr, its tail kept for
 * error messages).  Only private_mount_stop() waits, with deadlines, at
 * exit. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct private_mount {
        char *dir;       /* our temporary directory, 0700 */
        char *mnt;       /* dir/mnt, the mount point */
        pid_t pid;       /* the daemon; 0 once reaped */
        int status;      /* its wait status once reaped */
        int log_fd;      /* read end of its stderr (non-blocking), -1 at EOF */
        char tail[2048]; /* the last lines it wrote */
        size_t tail_len;
        bool mounted;
};

/* The securerfs program: $SECURERFS_BIN, else "securerfs" next to our own
 * executable (a build tree holds both), else the first on PATH.  Returns a
 * malloc'ed path, or NULL (with errno ENOENT). */
char *private_mount_find_daemon(void);

/* Start `daemon -f -o OPTIONS MNT` (options: "pool=1" and extra, which may
 * be NULL) on a fresh mount point under $TMPDIR (or /tmp).  The daemon's
 * stdin is /dev/null and its stdout and stderr a pipe we read: it never
 * sees our stdout, which carries the protocol.  Returns 0 or -errno with
 * a reason in err. */
int private_mount_start(const char *daemon, const char *extra, struct private_mount **out, char *err, size_t errlen);

/* 1 once the mount answers, 0 while not yet, -errno when it never will
 * (ECHILD: the daemon exited; its tail says why). */
int private_mount_ready(struct private_mount *m);

/* Copy what the daemon wrote to our stderr, keeping its tail.  Call when
 * log_fd is readable. */
void private_mount_read_log(struct private_mount *m);

/* The daemon exited (pid reaped elsewhere): record it. */
void private_mount_exited(struct private_mount *m, int status);

/* End it: SIGTERM (the daemon unmounts and ends every worker), then after
 * term_ms SIGKILL and a lazy unmount with fusermount3; reap it; remove the
 * mount point and the directory.  Frees m.  Accepts NULL. */
void private_mount_stop(struct private_mount *m, int term_ms);
