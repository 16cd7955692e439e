/* The tool registry's processes (sessions/tools.h): forked from the daemon
 * with common/child.h's clean start, watched through non-blocking pipes and
 * a child-exit watch on the loop. */
#include "tools_private.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "loop.h"
#include "macros.h"
#include "utf8.h"

/* What is kept of a tool's stderr for the error message: its end. */
#define STDERR_TAIL 4096u

/* The loop reaped it: whatever the tool left in its process group goes
 * with it, and whoever waits is told. */
static void proc_on_exit(pid_t pid, int status, const struct rusage *ru, void *data) {
        struct tool_proc *p = data;

        kill(-pid, SIGKILL);
        list_unlink(&p->link);
        if (p->exited)
                p->exited(p->data, status);
        free(p);
}

void tool_proc_abandon(struct tool_proc **pp) {
        struct tool_proc *p = *pp;

        if (!p)
                return;
        kill(-p->pid, SIGKILL);
        p->exited = NULL;
        p->data = NULL;
        *pp = NULL;
}

void tool_procs_free(struct tools *t) {
        struct tool_proc *p;

        /* Every group is killed; reap them so that none outlives us. */
        list_for_each(p, tmp, &t->procs, struct tool_proc, link) {
                kill(-p->pid, SIGKILL);
                waitpid(p->pid, NULL, 0);
                loop_unwatch_child(t->loop, p->pid);
                list_unlink(&p->link);
                free(p);
        }
}

static int pipe_pair(int fds[2], bool parent_reads) {
        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        if (fcntl(fds[parent_reads ? 0 : 1], F_SETFL, O_NONBLOCK) < 0) {
                int e = -errno;
                close(fds[0]);
                close(fds[1]);
                return e;
        }
        return 0;
}

/* Child of fork(), on the host, as the daemon's user, outside any jail: a
 * tool process.  Only async-signal-safe calls until execve. */
static void __attribute__((noreturn)) tool_child(const struct tool_def *d, const int fds[3], pid_t daemon) {
        static const char msg1[] = "securerfs: cannot run ";
        /* Its pipes become 0, 1 and 2; nothing else of the daemon's (the
         * FUSE channel, worker sockets, other tools' pipes) reaches it; a
         * process group of its own (killed whole); it dies with the
         * daemon. */
        const struct child_setup c = {.fds = fds, .n_fds = 3, .first_fd = 0, .new_group = true, .parent = daemon};
        int saved = ENOENT;

        struct rlimit as;

        if (child_after_fork(&c) < 0 || chdir("/") < 0)
                _exit(126);
        /* The definition's "memory": its address space and its children's,
         * soft and hard (within the daemon's own hard limit). */
        if (d->memory_bytes > 0 && getrlimit(RLIMIT_AS, &as) == 0) {
                as.rlim_cur = as.rlim_max = MIN(as.rlim_max, (rlim_t)d->memory_bytes);
                if (setrlimit(RLIMIT_AS, &as) < 0)
                        _exit(126);
        }
        for (char **p = d->exec_paths; *p; p++) {
                execve(*p, d->argv, d->envp);
                if (errno != ENOENT && errno != ENOTDIR)
                        saved = errno;
        }
        (void)!write(2, msg1, sizeof(msg1) - 1);
        (void)!write(2, d->argv[0], strlen(d->argv[0]));
        (void)!write(2, ": ", 2);
        (void)!write(2, strerror(saved), strlen(strerror(saved)));
        (void)!write(2, "\n", 1);
        _exit(127);
}

int tool_proc_start(struct tools *t, const struct tool_def *d, void (*exited)(void *, int), void *data, int fds[3],
                    struct tool_proc **proc) {
        int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, e;
        struct tool_proc *p = calloc(1, sizeof(*p));
        pid_t pid, self = getpid();

        if (!p)
                return -ENOMEM;
        if ((e = pipe_pair(in, false)) < 0 || (e = pipe_pair(out, true)) < 0 || (e = pipe_pair(err, true)) < 0)
                goto fail;
        pid = fork();
        if (pid < 0) {
                e = -errno;
                goto fail;
        }
        if (pid == 0)
                tool_child(d, (const int[3]){in[0], out[1], err[1]}, self);
        /* Also here: a kill of the group right after fork must reach it. */
        setpgid(pid, pid);
        close(in[0]);
        close(out[1]);
        close(err[1]);
        *p = (struct tool_proc){.owner = t, .pid = pid, .exited = exited, .data = data};
        if (loop_watch_child(t->loop, pid, proc_on_exit, p) < 0) {
                /* Not watched: it must not run.  Its exit is reaped as an
                 * unclaimed one. */
                kill(-pid, SIGKILL);
                close(in[1]);
                close(out[0]);
                close(err[0]);
                free(p);
                return -ENOMEM;
        }
        list_append(&t->procs, &p->link);
        fds[0] = in[1];
        fds[1] = out[0];
        fds[2] = err[0];
        *proc = p;
        return 0;
fail:
        for (int i = 0; i < 2; i++) {
                if (in[i] >= 0)
                        close(in[i]);
                if (out[i] >= 0)
                        close(out[i]);
                if (err[i] >= 0)
                        close(err[i]);
        }
        free(p);
        return e;
}

void tool_close_watched(struct tools *t, int *fd) {
        if (*fd < 0)
                return;
        loop_del_fd(t->loop, *fd);
        close(*fd);
        *fd = -1;
}

int tool_pipe_flush(struct tools *t, int fd, const char *buf, size_t len, size_t *off) {
        while (*off < len) {
                ssize_t n = write(fd, buf + *off, len - *off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                loop_mod_fd(t->loop, fd, EPOLLOUT);
                                return 0;
                        }
                        return -errno;
                }
                *off += (size_t)n;
        }
        return 1;
}

/* Keep the end of what a tool writes to stderr: at most 2 * STDERR_TAIL
 * bytes, cut back to STDERR_TAIL. */
static void keep_tail(struct text *t, const char *data, size_t n) {
        text_append(t, data, n);
        if (t->len > 2 * STDERR_TAIL)
                text_consume(t, t->len - STDERR_TAIL);
}

int tool_pipe_drain(int fd, struct text *into, size_t cap, bool tail, bool *over) {
        char buf[65536];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -errno;
                }
                if (n == 0)
                        return 1;
                if (tail) {
                        keep_tail(into, buf, (size_t)n);
                } else if (into->len + (size_t)n > cap) {
                        *over = true;
                        return 0;
                } else {
                        text_append(into, buf, (size_t)n);
                }
        }
}

char *tool_tail_message(const struct text *err) {
        size_t start = 0, end = err->len, n;
        char *s;

        while (end > 0 && (err->data[end - 1] == '\n' || err->data[end - 1] == ' ' || err->data[end - 1] == '\r'))
                end--;
        if (end > STDERR_TAIL)
                start = end - STDERR_TAIL;
        /* Skip a partial UTF-8 character at the cut. */
        while (start < end && ((unsigned char)err->data[start] & 0xC0) == 0x80)
                start++;
        s = utf8_sanitize_dup(err->data ? err->data + start : "", end - start, &n);
        return s ? s : strdup("");
}
