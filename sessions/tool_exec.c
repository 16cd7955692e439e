/* exec mode (docs/tools.md): a process per call; its stdin is the arguments
 * as one JSON object, its stdout the result as JSON (text that is not JSON
 * comes back as a string); a non-zero exit is an error with the end of
 * stderr as message. */
#include "tools_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>

#include "json_cleanup.h"
#include "loop.h"
#include "macros.h"
#include "utf8.h"

/* stdout of a successful exec: JSON, or else the text as a string; empty is
 * null. */
static json_t *exec_value(const struct text *out) {
        size_t n = out->len, clean_len;
        const char *p = out->data ? out->data : "";
        json_t *j;
        _cleanup_free_ char *clean = NULL;

        while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
                n--;
        if (strspn(p, " \t\r\n") >= n)
                return json_null();
        j = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        if (j)
                return j;
        clean = utf8_sanitize_dup(p, n, &clean_len);
        return clean ? json_stringn(clean, clean_len) : json_null();
}

/* Done once it has exited and both its output pipes are at their end. */
static void exec_maybe_done(struct tool_call *c) {
        char msg[256];
        _cleanup_free_ char *tail = NULL, *both = NULL;
        int st = c->status;

        if (!c->exited || c->out_fd >= 0 || c->err_fd >= 0)
                return;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
                tool_call_finish(c, exec_value(&c->out), NULL, true);
                return;
        }
        tail = tool_tail_message(&c->err);
        if (WIFSIGNALED(st))
                snprintf(msg, sizeof(msg), "the tool was killed by signal %d (%s)", WTERMSIG(st),
                         strsignal(WTERMSIG(st)));
        else
                snprintf(msg, sizeof(msg), "the tool exited with status %d", WEXITSTATUS(st));
        /* Its own words when it exited; how it died, then its words, when
         * a signal ended it. */
        if (tail && *tail && WIFEXITED(st))
                tool_call_finish(c, NULL, tail, true);
        else if (tail && *tail && asprintf(&both, "%s: %s", msg, tail) >= 0)
                tool_call_finish(c, NULL, both, true);
        else
                tool_call_finish(c, NULL, msg, true);
}

static void exec_exited(void *data, int status) {
        struct tool_call *c = data;

        c->proc = NULL;
        c->exited = true;
        c->status = status;
        exec_maybe_done(c);
}

static void exec_on_io(int fd, uint32_t events, void *data) {
        struct tool_call *c = data;
        struct tools *t = c->owner;
        bool over = false;
        int r;

        if (fd == c->in_fd) {
                r = tool_pipe_flush(t, fd, c->args_text, c->args_len, &c->in_off);
                /* All written, or the tool closed its stdin (EPIPE): done
                 * with it either way. */
                if (r != 0)
                        tool_close_watched(t, &c->in_fd);
                return;
        }
        if (fd == c->out_fd) {
                r = tool_pipe_drain(fd, &c->out, TOOL_IO_MAX, false, &over);
                if (over) {
                        tool_call_finish(c, NULL, "the tool's reply is over 1 MiB", true);
                        return;
                }
                if (r != 0)
                        tool_close_watched(t, &c->out_fd);
        } else if (fd == c->err_fd) {
                r = tool_pipe_drain(fd, &c->err, 0, true, &over);
                if (r != 0)
                        tool_close_watched(t, &c->err_fd);
        }
        exec_maybe_done(c);
}

static void exec_on_timeout(void *data) {
        struct tool_call *c = data;
        char msg[128];

        snprintf(msg, sizeof(msg), "the tool did not finish within its timeout of %g s and was killed",
                 c->def->timeout_s);
        tool_call_finish(c, NULL, msg, true);
}

int tool_exec_start(struct tool_call *c) {
        struct tools *t = c->owner;
        int fds[3], e;

        e = tool_proc_start(t, c->def, exec_exited, c, fds, &c->proc);
        if (e < 0)
                return e;
        c->pid = c->proc->pid;
        c->in_fd = fds[0];
        c->out_fd = fds[1];
        c->err_fd = fds[2];
        if (loop_add_fd(t->loop, c->in_fd, EPOLLOUT, exec_on_io, c) < 0 ||
            loop_add_fd(t->loop, c->out_fd, EPOLLIN, exec_on_io, c) < 0 ||
            loop_add_fd(t->loop, c->err_fd, EPOLLIN, exec_on_io, c) < 0)
                return -ENOMEM;
        /* The arguments, one JSON object and a newline. */
        e = tool_pipe_flush(t, c->in_fd, c->args_text, c->args_len, &c->in_off);
        if (e != 0)
                tool_close_watched(t, &c->in_fd);
        return tool_call_arm_timeout(c, exec_on_timeout);
}
