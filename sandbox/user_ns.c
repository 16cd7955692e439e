/* The worker's user namespace and its one mapped id (sandbox/user_ns.h). */
#include "user_ns.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "macros.h"
#include "smallfile.h"

int user_ns_write_maps(pid_t pid, unsigned inside, uid_t host_uid, gid_t host_gid, struct jail_error *e) {
        char dir[32], path[64], line[64];
        int r;

        if (pid > 0)
                snprintf(dir, sizeof(dir), "/proc/%ld", (long)pid);
        else
                snprintf(dir, sizeof(dir), "/proc/self");
        snprintf(path, sizeof(path), "%s/setgroups", dir);
        r = small_file_write(AT_FDCWD, path, "deny", 0, 0);
        if (r < 0 && r != -ENOENT) /* ENOENT: kernel < 3.19, no such file */
                return jail_fail(e, r, "write %s", path);
        snprintf(path, sizeof(path), "%s/uid_map", dir);
        snprintf(line, sizeof(line), "%u %u 1", inside, (unsigned)host_uid);
        if ((r = small_file_write(AT_FDCWD, path, line, 0, 0)) < 0)
                return jail_fail(e, r, "write %s (\"%s\")", path, line);
        snprintf(path, sizeof(path), "%s/gid_map", dir);
        snprintf(line, sizeof(line), "%u %u 1", inside, (unsigned)host_gid);
        if ((r = small_file_write(AT_FDCWD, path, line, 0, 0)) < 0)
                return jail_fail(e, r, "write %s (\"%s\")", path, line);
        return 0;
}

int user_ns_map_child(pid_t pid, int go_fd, uid_t host_uid, gid_t host_gid, struct jail_error *e) {
        int r = user_ns_write_maps(pid, JAIL_UID, host_uid, host_gid, e);

        if (r < 0)
                return r;
        if (write(go_fd, "m", 1) != 1)
                return jail_fail(e, -errno, "release the child");
        return 0;
}

int user_ns_wait_mapped(int go_fd) {
        char c = 0;
        ssize_t n;

        do
                n = read(go_fd, &c, 1);
        while (n < 0 && errno == EINTR);
        return n == 1 && c == 'm' ? 0 : -1;
}

int user_ns_become_jail_user(struct jail_error *e) {
        if (setresgid(JAIL_GID, JAIL_GID, JAIL_GID) < 0)
                return jail_fail(e, -errno, "setresgid %d (is gid_map written?)", JAIL_GID);
        if (setresuid(JAIL_UID, JAIL_UID, JAIL_UID) < 0)
                return jail_fail(e, -errno, "setresuid %d (is uid_map written?)", JAIL_UID);
        if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
                return jail_fail(e, -errno, "prctl PR_SET_DUMPABLE");
        /* A change of credentials also cleared the parent-death signal. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
                return jail_fail(e, -errno, "prctl PR_SET_PDEATHSIG");
        return 0;
}

/* The inotify and fanotify counters are charged up the chain of user
 * namespaces to their owners, the daemon's uid (or root), which every
 * session and the daemon's own user share: a second lock behind the filter,
 * which refuses the calls (docs/security.md, "Per-user kernel counters"). */
int user_ns_limit(const char *proc_dir, struct jail_error *e) {
        static const struct {
                const char *name;
                bool required;
        } limits[] = {
                {"max_user_namespaces", true},   {"max_inotify_instances", false}, {"max_inotify_watches", false},
                {"max_fanotify_groups", false},  {"max_fanotify_marks", false},
        };
        char path[128];
        int r;

        for (size_t i = 0; i < ARRAY_SIZE(limits); i++) {
                snprintf(path, sizeof(path), "%s/sys/user/%s", proc_dir, limits[i].name);
                r = small_file_write(AT_FDCWD, path, "0", 0, 0);
                if (r < 0 && (limits[i].required || r != -ENOENT))
                        return jail_fail(e, r, "write /proc/sys/user/%s", limits[i].name);
        }
        return 0;
}
