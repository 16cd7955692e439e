/* securerfs: the daemon.  Parses options, mounts, and runs the one event
 * loop that owns every session (see fs/fs.h and sessions/session.h). */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capacity.h"
#include "config.h"
#include "fs.h"
#include "log.h"
#include "loop.h"
#include "macros.h"
#include "options.h"
#include "sessions/audit.h"

static const char usage_text[] =
        "usage: securerfs [-f] [-d] [-o opt[,opt...]] MOUNTPOINT\n"
        "\n"
        "Run R code in sandboxed, persistent sessions through files.\n"
        "\n"
        "securerfs options (-o key=value):\n"
        "    timeout=SECONDS        per-run timeout of new sessions (30; 0: none)\n"
        "    grace=SECONDS          after an interrupt, wait this long before killing (2)\n"
        "    pool=N                 idle workers kept ready (1)\n"
        "    max_sessions=N         sessions at once (256; at most what the machine holds:\n"
        "                           descriptors, pids, memory, checked at start)\n"
        "    max_tool_calls=N       tool calls in one run (1000)\n"
        "    max_code_bytes=SIZE    largest input (1M)\n"
        "    console_max_bytes=SIZE console kept per run (1M)\n"
        "    tmp_size=SIZE          size of each sandbox's /tmp (64M)\n"
        "    files_max_bytes=SIZE   each session's workspace, /work and files/ (256M)\n"
        "    audit_log=PATH         JSON-lines audit log (mode 0600; never a symlink)\n"
        "    state_dir=DIR          sessions persist there across restarts (DIR 0700)\n"
        "    checkpoint_interval=S  with state_dir: checkpoint a session at most every S s (30)\n"
        "    sandbox=strict|none    the jail (strict); none runs workers unjailed\n"
        "    r_libs=DIR[:DIR...]    extra R library directories, read-only inside\n"
        "    cpu=SECONDS            default limits of new sessions: cpu per run (60),\n"
        "    memory=SIZE            address space (512M), fsize (50M), nproc (50),\n"
        "    fsize=SIZE nproc=N     nofile (256), stack (8M); 'none' for no limit\n"
        "    nofile=N stack=SIZE\n"
        "    worker=PATH            the securerfs-worker program\n"
        "    allow_other            let other users use the mount (off)\n"
        "    allow_exec             let R code run programs (system()); off: execve is refused\n"
        "    id_range=BASE:COUNT    as root: host uids/gids for sessions, one each (1879048192:65536);\n"
        "                           must not overlap /etc/passwd, group, subuid or subgid\n"
        "SIZE takes K, M, G suffixes (powers of 1024).\n"
        "\n"
        "Unmount with: fusermount3 -u MOUNTPOINT (or SIGINT/SIGTERM to the daemon).\n"
        "\n";

struct cli {
        struct options opt;
        char err[512];
        int bad;
};

/* fuse_opt callback: our keys are applied and dropped; everything else is
 * left for libfuse (which refuses what it does not know). */
static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs) {
        struct cli *c = data;
        const char *eq;
        char k[64];
        int e;

        if (key != FUSE_OPT_KEY_OPT)
                return 1;
        if (strcmp(arg, "allow_other") == 0) {
                c->opt.allow_other = true;
                return 1;
        }
        if (strcmp(arg, "allow_exec") == 0) {
                options_set(&c->opt, "allow_exec", "1", c->err, sizeof(c->err));
                return 0;
        }
        eq = strchr(arg, '=');
        if (!eq || (size_t)(eq - arg) >= sizeof(k))
                return 1;
        memcpy(k, arg, (size_t)(eq - arg));
        k[eq - arg] = '\0';
        e = options_set(&c->opt, k, eq + 1, c->err, sizeof(c->err));
        if (e == -ENOENT)
                return 1; /* not ours */
        if (e < 0) {
                c->bad = 1;
                return -1;
        }
        return 0;
}

/* A daemon killed with SIGKILL leaves its mount point answering ENOTCONN;
 * detach that stale mount so that we can mount again. */
static void clear_stale_mount(const char *mountpoint) {
        struct statfs sf;
        pid_t pid;
        int status;

        /* statfs, not stat: the kernel may answer stat from its attribute
         * cache for a second after the daemon died; STATFS always goes to
         * the (dead) connection. */
        if (statfs(mountpoint, &sf) == 0 || errno != ENOTCONN)
                return;
        log_info("%s: stale mount of a daemon that is gone; detaching it", mountpoint);
        if (umount2(mountpoint, MNT_DETACH) == 0)
                return;
        pid = fork();
        if (pid == 0) {
                execlp("fusermount3", "fusermount3", "-u", "-z", "--", mountpoint, (char *)NULL);
                _exit(127);
        }
        if (pid > 0)
                waitpid(pid, &status, 0);
}

/* A clean stop waits this long for the sessions' last checkpoints. */
#define STOP_CHECKPOINT_TIMEOUT_MS 60000
/* The loop's look before sleeping (loop_set_spin): a 1+1 through eval kept
 * open is answered within it; 50, 100 and 200 us measured 84-89, 82-88 and
 * 82-84 us against 120-131 without, on an idle 2-vCPU VM. */
#define LOOP_SPIN_NS 100000ull

static void stop_loop(void *data) { loop_stop(data); }

static void on_signal(int fd, uint32_t events, void *data) {
        struct loop *l = data;
        struct signalfd_siginfo si;

        while (read(fd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGCHLD) {
                        /* Each child's exit goes to the watch its owner
                         * registered (common/loop.h). */
                        loop_reap_children(l);
                } else {
                        log_info("signal %d (%s): unmounting", (int)si.ssi_signo, strsignal((int)si.ssi_signo));
                        loop_stop(l);
                }
        }
}

int main(int argc, char *argv[]) {
        struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
        struct fuse_cmdline_opts fo = {0};
        struct cli c = {0};
        struct loop *l = NULL;
        struct fs *fs = NULL;
        sigset_t mask;
        int sfd = -1, e, ret = 1;
        char abs_audit[PATH_MAX];

        log_set_prefix("securerfs");
        options_init(&c.opt);
        if (fuse_opt_parse(&args, &c, NULL, opt_proc) != 0) {
                fprintf(stderr, "securerfs: %s\n", c.bad ? c.err : "bad options");
                goto out;
        }
        if (fuse_parse_cmdline(&args, &fo) != 0)
                goto out;
        if (fo.show_help) {
                fputs(usage_text, stdout);
                printf("FUSE options:\n");
                fuse_cmdline_help();
                fuse_lowlevel_help();
                ret = 0;
                goto out;
        }
        if (fo.show_version) {
                printf("securerfs %s (libfuse %s)\n", SECURERFS_VERSION, fuse_pkgversion());
                ret = 0;
                goto out;
        }
        if (!fo.mountpoint) {
                fputs(usage_text, stderr);
                ret = 2;
                goto out;
        }
        if (fo.debug)
                log_max_level = LOG_DEBUG;
        fuse_opt_add_arg(&args, "-ofsname=securerfs,subtype=securerfs,default_permissions");
        /* Check the audit log now, while errors still reach the terminal; the
         * daemon changes directory to / when it forks, so keep it absolute. */
        if (c.opt.audit_log) {
                struct audit *a;
                if (c.opt.audit_log[0] != '/') {
                        if (!getcwd(abs_audit, sizeof(abs_audit) - strlen(c.opt.audit_log) - 2)) {
                                fprintf(stderr, "securerfs: audit_log: %s\n", strerror(errno));
                                goto out;
                        }
                        strcat(abs_audit, "/");
                        strcat(abs_audit, c.opt.audit_log);
                        free(c.opt.audit_log);
                        c.opt.audit_log = strdup(abs_audit);
                }
                e = audit_open(c.opt.audit_log, &a);
                if (e < 0) {
                        fprintf(stderr, "securerfs: audit_log %s: %s\n", c.opt.audit_log,
                                e == -ELOOP ? "is a symbolic link; refusing to follow it" : strerror(-e));
                        goto out;
                }
                audit_close(a);
        }
        /* Before any helper starts (and before the id range is held to max_sessions): they inherit the raised limit. */
        if (capacity_check(&c.opt, c.err, sizeof(c.err)) < 0) {
                fprintf(stderr, "securerfs: %s\n", c.err);
                goto out;
        }
        /* The daemon changes directory to / when it forks. */
        if (c.opt.state_dir && c.opt.state_dir[0] != '/') {
                char cwd[PATH_MAX], *abs = NULL;

                if (!getcwd(cwd, sizeof(cwd)) || asprintf(&abs, "%s/%s", cwd, c.opt.state_dir) < 0) {
                        fprintf(stderr, "securerfs: state_dir: %s\n", strerror(errno));
                        goto out;
                }
                free(c.opt.state_dir);
                c.opt.state_dir = abs;
        }
        /* A root daemon runs each session's workers as an unprivileged host
         * id of its range: no id of it may be anyone's on this host (a
         * file owned by it would be the worker's). */
        if (geteuid() == 0 && !c.opt.sandbox_none) {
                const struct id_range *r = &c.opt.id_range;

                if (id_range_check_host(r, c.err, sizeof(c.err)) < 0) {
                        fprintf(stderr, "securerfs: %s; pick another with -o id_range=BASE:COUNT\n", c.err);
                        goto out;
                }
                if ((unsigned long long)r->count < (unsigned long long)c.opt.max_sessions + c.opt.pool) {
                        fprintf(stderr, "securerfs: id_range=%u:%u has fewer ids than max_sessions + pool (%u)\n",
                                r->base, r->count, c.opt.max_sessions + c.opt.pool);
                        goto out;
                }
        }
        clear_stale_mount(fo.mountpoint);

        e = loop_new(&l);
        if (e < 0) {
                log_error("epoll: %s", strerror(-e));
                goto out;
        }
        /* The loop's look before it sleeps, where it may run beside the
         * processes it waits for (common/loop.h, loop_set_spin). */
        {
                cpu_set_t cpus;

                if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) > 1)
                        loop_set_spin(l, LOOP_SPIN_NS);
        }
        if (fs_new(l, &c.opt, &args, fo.mountpoint, &fs) < 0)
                goto out; /* libfuse printed why */
        if (fuse_daemonize(fo.foreground) != 0) {
                log_error("could not go to the background");
                goto out;
        }
        /* Signals arrive through the loop; children (the zygote, the
         * keeper, tool processes and the workers the zygote clones with
         * CLONE_PARENT) are reaped there. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (sfd < 0 || loop_add_fd(l, sfd, EPOLLIN, on_signal, l) < 0) {
                log_error("signalfd: %s", strerror(errno));
                goto out;
        }
        e = fs_start(fs);
        if (e < 0) {
                log_error("starting: %s", strerror(-e));
                goto out;
        }
        log_info("mounted on %s (sandbox %s, pool %u)", fo.mountpoint, c.opt.sandbox_none ? "none" : "strict",
                 c.opt.pool);
        e = loop_run(l);
        if (e < 0)
                log_error("event loop: %s", strerror(-e));
        else
                ret = 0;
        /* A clean stop with -o state_dir: unmount (no request comes any
         * more), then every started session's state is written by its
         * worker, the loop serving them, within a deadline (a second
         * signal ends the wait). */
        if (e >= 0 && c.opt.state_dir && fs) {
                struct loop_timer *deadline = loop_timer_new(l, stop_loop, l);
                unsigned n;

                fs_unmount(fs);
                n = fs_checkpoint_all(fs, stop_loop, l);
                if (n > 0 && deadline) {
                        log_info("writing %u sessions to %s", n, c.opt.state_dir);
                        loop_timer_arm(deadline, now_ns() + STOP_CHECKPOINT_TIMEOUT_MS * 1000000ULL);
                        loop_run(l);
                }
                loop_timer_free(deadline);
        }
out:
        if (fs) {
                fs_unmount(fs);
                fs_free(fs);
        }
        if (sfd >= 0)
                close(sfd);
        loop_free(l);
        free(fo.mountpoint);
        fuse_opt_free_args(&args);
        options_free(&c.opt);
        return ret;
}
