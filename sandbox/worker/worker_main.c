/* The worker process after the clone, and its channel to the daemon
 * (worker.h; docs/protocol.md, "Worker channel").
 *
 * The order: its own stack canary, its descriptors, the jail (without
 * /work), "ready"; then, once assigned to a session, the workspace frame,
 * the jail's last steps (/work, no capabilities, the filter), "attached";
 * then the daemon's frames until end of file. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <Rembedded.h>
#include <Rversion.h>

#include "child.h"
#include "clock.h"
#include "fdpass.h"
#include "frame.h"
#include "json_cleanup.h"
#include "log.h"
#include "sandbox/secrets.h"

static struct {
        int sock; /* fd 3 in a worker, -1 in the zygote */
        /* The daemon's frames are read through this reader between runs
         * and while a tool call waits for its reply. */
        struct frame_reader reader;
        /* The descriptor that came with the daemon's last bytes (snapshot,
         * restore), -1 when none. */
        int passed_fd;
        /* The workspace (/work), opened when it was attached: the working
         * directory is the session's code's to change (setwd), so a
         * snapshot or restore must not take "." for it. */
        int work_fd;
        dev_t work_dev;
        ino_t work_ino;
        /* How long to look for the next frame before sleeping (0: not at
         * all): receive_frame(). */
        uint64_t look_ns;
} W = {.sock = -1, .passed_fd = -1, .work_fd = -1};

/* receive_frame()'s look: on an idle 2-vCPU VM a 1+1 through eval kept
 * open took 35-55 us unpinned with it against 85-141 without (the daemon's
 * own look, fs/main.c, in both). */
#define WORKER_LOOK_NS 100000ull

int worker_workspace(void) {
        struct stat st;
        int fd;

        /* Native code of the session could have closed it or put another
         * directory at its number: the same directory as attached, or
         * nothing. */
        if (W.work_fd < 0 || fstat(W.work_fd, &st) < 0 || st.st_dev != W.work_dev || st.st_ino != W.work_ino)
                return -ESTALE;
        fd = fcntl(W.work_fd, F_DUPFD_CLOEXEC, 0);
        return fd < 0 ? -errno : fd;
}

/* ---- the channel ----------------------------------------------------------- */

void channel_send(json_t *msg) {
        int r;

        if (!msg)
                worker_exit(1); /* out of memory building it */
        r = frame_send(W.sock, msg);
        json_decref(msg);
        if (r < 0)
                worker_exit(1);
}

int channel_try_send(const json_t *msg) {
        return frame_send(W.sock, msg);
}

void channel_write(const char *buf, size_t len) {
        size_t off = 0;

        while (off < len) {
                ssize_t n = write(W.sock, buf + off, len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        worker_exit(1);
                off += (size_t)n;
        }
}

int channel_next(json_t **msg) {
        return frame_reader_next(&W.reader, msg);
}

void channel_fill(void) {
        long n = frame_reader_fill(&W.reader, W.sock);

        if (n == 0)
                worker_exit(0);
        if (n < 0 && n != -EINTR && n != -EAGAIN)
                worker_exit(1);
}

int channel_fd(void) {
        return W.sock;
}

void worker_exit(int status) {
        r_tempdir_remove();
        if (*jail_private_dir())
                rmdir(jail_private_dir()); /* none mode; empty by now unless R left files */
        _exit(status);
}

/* ---- the process ------------------------------------------------------------- */

static void send_fatal(const char *error) {
        json_t *msg = json_pack("{s:s, s:s}", "type", "fatal", "error", error);

        if (msg)
                frame_send(W.sock, msg);
        json_decref(msg);
}

static int setup_tmpdir(char *err, size_t errlen) {
        const char *dir = jail_tmpdir();

        if (!dir || !*dir) {
                snprintf(err, errlen, "no temporary directory from the jail");
                return -ENOENT;
        }
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                int e = errno;

                snprintf(err, errlen, "mkdir %s: %s", dir, strerror(e));
                return -e;
        }
        /* R_TempDir still names the zygote's directory, shared by every
         * worker (and absent inside the jail). */
        R_TempDir = strdup(dir);
        if (!R_TempDir) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        setenv("TMPDIR", dir, 1);
        setenv("R_SESSION_TMPDIR", dir, 1);
        /* fontconfig writes a missing cache under $XDG_CACHE_HOME, else
         * $HOME/.cache: not in the user's workspace. */
        setenv("XDG_CACHE_HOME", dir, 1);
        return 0;
}

static int redirect_stdio(char *err, size_t errlen) {
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

        if (fd < 0) {
                int e = errno;

                snprintf(err, errlen, "open /dev/null: %s", strerror(e));
                return -e;
        }
        for (int i = 0; i < 3; i++)
                if (fd != i && dup2(fd, i) < 0) {
                        int e = errno;

                        snprintf(err, errlen, "dup2 /dev/null: %s", strerror(e));
                        return -e;
                }
        if (fd > 2)
                close(fd);
        return 0;
}

/* Wait for the daemon's workspace frame, which carries the workspace's
 * descriptor (SCM_RIGHTS on its bytes: recvmsg, not read, or the kernel
 * would drop it); a pooled worker may get "warm" before it.  Bytes of
 * later frames stay in W.reader.  Returns the descriptor, or -1 (anything
 * else first, or no descriptor). */
static int receive_workspace(void) {
        int fd = -1;

        for (;;) {
                char buf[4096];
                json_t *m = NULL;
                int e = frame_reader_next(&W.reader, &m), got;
                size_t n_got;
                ssize_t n;

                if (e < 0)
                        break;
                if (e == 1) {
                        bool warm = !strcmp(frame_type(m), "warm"), ok = warm || !strcmp(frame_type(m), "workspace");

                        json_decref(m);
                        if (!ok)
                                break;
                        if (warm) {
                                run_warm(); /* pooled: the session's first run will not pay its page copies */
                                continue;
                        }
                        return fd;
                }
                n = fdpass_recv(W.sock, buf, sizeof(buf), &got, 1, &n_got, 0);
                if (n == 0)
                        _exit(0); /* a pooled worker the daemon no longer wants */
                if (n < 0)
                        break;
                if (n_got && fd < 0)
                        fd = got;
                else if (n_got)
                        close(got);
                if (frame_reader_feed(&W.reader, buf, (size_t)n) < 0)
                        break;
        }
        if (fd >= 0)
                close(fd);
        return -1;
}

/* Whether fd has input within ns, looked for without sleeping: a client
 * that keeps eval open sends its next run within about that after reading
 * the result, and a worker asleep by then costs the run a wake-up on
 * another CPU.  The look's CPU is the session's own, after its runs only;
 * none at rest.  docs/performance.md, "Fewer cross-CPU wake-ups". */
static bool look(int fd, uint64_t ns) {
        uint64_t end;

        if (!ns)
                return false;
        end = now_ns() + ns;
        do {
                int n = poll(&(struct pollfd){.fd = fd, .events = POLLIN}, 1, 0);

                if (n > 0)
                        return true; /* input or the hang-up: the recvmsg() after it sees which */
                if (n < 0 && errno != EINTR)
                        return false; /* the sleeping poll() says why */
                sched_yield(); /* whatever else would run on this CPU first */
        } while (now_ns() < end);
        return false;
}

/* The next frame between runs, with recvmsg so that a descriptor sent with
 * it (SCM_RIGHTS on its first byte) is kept in W.passed_fd: 1 with *msg, 0
 * at end of file, -errno. */
static int receive_frame(json_t **msg) {
        for (;;) {
                char buf[65536];
                int e = frame_reader_next(&W.reader, msg), got;
                size_t n_got;
                ssize_t n;

                if (e != 0)
                        return e;
                /* Sleep in poll(), not in recvmsg(): a unix stream socket
                 * has one wait queue for readers and writers, and each time
                 * the daemon reads a frame of ours the kernel frees its
                 * buffer and wakes that queue for write space
                 * (unix_write_space).  A recvmsg() sleeping on it wakes for
                 * nothing, once per run: two context switches.  poll()'s
                 * wait entry filters by the events asked for, so only input
                 * (or the hang-up) wakes it; the recvmsg() after it does not
                 * block. */
                if (!look(W.sock, W.look_ns) &&
                    poll(&(struct pollfd){.fd = W.sock, .events = POLLIN}, 1, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                n = fdpass_recv(W.sock, buf, sizeof(buf), &got, 1, &n_got, 0);
                if (n == 0)
                        return 0;
                if (n < 0 && n != -EINTR)
                        return (int)n;
                if (n < 0)
                        continue;
                if (n_got) {
                        if (W.passed_fd >= 0)
                                close(W.passed_fd);
                        W.passed_fd = got;
                }
                if (frame_reader_feed(&W.reader, buf, (size_t)n) < 0)
                        return -EBADMSG;
        }
}

void worker_main(int sock, const struct jail_options *o) {
        /* Child of jail_clone(), in the zygote's image: the zygote's control
         * socket is fd 3, the daemon's socket for this worker is sock. */
        const struct child_setup fds = {.fds = &sock, .n_fds = 1, .first_fd = WORKER_FD};
        char err[1024] = "";

        /* First: this worker's own stack canary, not the zygote's that every
         * worker would otherwise share (sandbox/secrets.h).  Safe because
         * worker_main() never returns and the zygote's frames below it never
         * resume in this child. */
        if (worker_reseed_secrets() < 0)
                _exit(1);
        /* Every signal back to its default and unblocked; fd 3 the worker's
         * socket and nothing else of the zygote's open (common/child.h). */
        if (child_after_fork(&fds) < 0)
                _exit(1);
        W.sock = WORKER_FD;
        /* Only where the worker can run beside the daemon: on one CPU the
         * look would hold the CPU the daemon needs to send the frame. */
        {
                cpu_set_t cpus;

                if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) > 1)
                        W.look_ns = WORKER_LOOK_NS;
        }
        signal(SIGPIPE, SIG_IGN); /* a daemon gone away is EPIPE, then end of file */

        /* The jail without /work: a pooled worker exists before its
         * session, and keeps its capabilities (inside its own namespaces)
         * until the workspace comes. */
        if (jail_enter(o, err, sizeof(err)) < 0 || redirect_stdio(err, sizeof(err)) < 0 ||
            setup_tmpdir(err, sizeof(err)) < 0) {
                send_fatal(err);
                _exit(1);
        }
        snprintf(err, sizeof(err), "worker %ld", (long)getpid());
        log_set_prefix(err);
        signals_install();

        channel_send(json_pack("{s:s, s:s, s:I}", "type", "ready", "r_version", R_MAJOR "." R_MINOR, "reserved_bytes",
                               (json_int_t)worker_reserved_address_space()));

        frame_reader_init(&W.reader, FRAME_MAX_BYTES);
        /* Assigned to a session: its workspace becomes /work, then the last
         * privileges go and the filter is installed (jail.c), before any
         * user code. */
        {
                int ws = receive_workspace();

                if (ws < 0 || jail_attach_workspace(o, ws, err, sizeof(err)) < 0) {
                        send_fatal(ws < 0 ? "no workspace descriptor from the daemon" : err);
                        _exit(1);
                }
                close(ws);
        }
        {
                struct stat st;

                W.work_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (W.work_fd < 0 || fstat(W.work_fd, &st) < 0) {
                        send_fatal("the workspace cannot be opened");
                        _exit(1);
                }
                W.work_dev = st.st_dev;
                W.work_ino = st.st_ino;
        }
        /* From here on: inside the jail, no capabilities. */
        channel_send(json_pack("{s:s}", "type", "attached"));

        for (;;) {
                _cleanup_json_ json_t *msg = NULL;
                const char *type;
                int e = receive_frame(&msg);

                if (e == 0)
                        worker_exit(0); /* the daemon closed the session */
                if (e < 0)
                        worker_exit(2);
                type = frame_type(msg);
                if (!strcmp(type, "snapshot") || !strcmp(type, "restore")) {
                        int fd = W.passed_fd;

                        /* The daemon sends these with a descriptor, and only
                         * between runs. */
                        W.passed_fd = -1;
                        if (fd < 0)
                                worker_exit(2);
                        if (type[0] == 's')
                                state_snapshot(fd);
                        else
                                state_restore(fd, json_integer_value(json_object_get(msg, "check")) == 1);
                        continue;
                }
                /* A descriptor read with the bytes of an earlier frame
                 * (the kernel may hand several frames to one recvmsg) stays
                 * for the snapshot or restore it came with. */
                if (!strcmp(type, "define_tool") || !strcmp(type, "remove_tool")) {
                        if (tool_bridge_define(msg) < 0)
                                worker_exit(2);
                        continue;
                }
                if (!strcmp(type, "tool_result") || !strcmp(type, "interrupt"))
                        continue; /* for a run that has ended */
                if (run_serve(msg) < 0)
                        worker_exit(2);
        }
}
