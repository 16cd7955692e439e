/* server mode (docs/tools.md): one long-lived process per (calling session,
 * scope of the definition, command); one JSON object a line each way,
 * {"id","tool","args"} in, {"id","value"} or {"id","error"} out. */
#include "tools_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json_cleanup.h"
#include "log.h"
#include "loop.h"
#include "macros.h"

static void server_free(struct tool_server *srv) {
        struct tools *t = srv->scope->owner;

        list_unlink(&srv->link);
        tool_proc_abandon(&srv->proc);
        tool_close_watched(t, &srv->in_fd);
        tool_close_watched(t, &srv->out_fd);
        tool_close_watched(t, &srv->err_fd);
        text_free(&srv->inbuf);
        text_free(&srv->line);
        text_free(&srv->err);
        free(srv->command_key);
        free(srv);
}

void tool_server_fail(struct tool_server *srv, const char *why) {
        _cleanup_free_ char *tail = NULL, *msg = NULL;
        struct tool_call *c;
        bool over = false;

        if (srv->err_fd >= 0)
                tool_pipe_drain(srv->err_fd, &srv->err, 0, true, &over);
        tail = tool_tail_message(&srv->err);
        if (tail && *tail && asprintf(&msg, "%s: %s", why, tail) < 0)
                msg = NULL;
        /* Detach first: finishing a call must not find the server. */
        tool_proc_abandon(&srv->proc);
        while ((c = list_first(&srv->calls, struct tool_call, server_link)))
                tool_call_finish(c, NULL, msg ? msg : why, true);
        server_free(srv);
}

void tool_scope_prune_servers(struct tool_scope *sc, struct tool_scope *defs) {
        struct tool_server *srv;

        list_for_each(srv, tmp, &sc->servers, struct tool_server, link) {
                struct tool_entry *e;
                bool used = false;

                if (srv->global != (defs->session_id == 0))
                        continue;
                list_for_each(e, etmp, &defs->entries, struct tool_entry, link) {
                        if (e->def && !e->unlinked && e->def->server &&
                            strcmp(e->def->command_key, srv->command_key) == 0)
                                used = true;
                }
                if (!used)
                        tool_server_fail(srv, "the tool was removed");
        }
}

static void server_exited(void *data, int status) {
        struct tool_server *srv = data;
        char why[128];

        srv->proc = NULL;
        if (WIFSIGNALED(status))
                snprintf(why, sizeof(why), "the tool server was killed by signal %d (%s)", WTERMSIG(status),
                         strsignal(WTERMSIG(status)));
        else
                snprintf(why, sizeof(why), "the tool server exited with status %d", WEXITSTATUS(status));
        tool_server_fail(srv, why);
}

/* One line of the server's stdout: {"id": N, "value": ...} or {"id": N,
 * "error": "..."}.  Lines that are not such a reply (a server's debugging
 * output) are ignored. */
static void server_line(struct tool_server *srv, const char *line, size_t len) {
        _cleanup_json_ json_t *j = json_loadb(line, len, 0, NULL);
        json_t *id = json_object_get(j, "id"), *err = json_object_get(j, "error");
        struct tool_call *c, *found = NULL;

        if (!json_is_integer(id)) {
                log_debug("tool server %s: ignoring a line that is not a reply", srv->command_key);
                return;
        }
        list_for_each(c, tmp, &srv->calls, struct tool_call, server_link) {
                if (c->server_id == (uint64_t)json_integer_value(id)) {
                        found = c;
                        break;
                }
        }
        if (!found)
                return; /* a reply to a call that was cancelled */
        if (err && !json_is_null(err)) {
                _cleanup_free_ char *text = json_is_string(err) ? NULL : json_dumps(err, JSON_ENCODE_ANY);
                tool_call_finish(found, NULL, text ? text : json_string_value(err), true);
                return;
        }
        tool_call_finish(found, json_incref(json_object_get(j, "value")), NULL, true);
}

/* Its stdout: replies, a line each. */
static void server_read(struct tool_server *srv, int fd) {
        for (;;) {
                char buf[65536];
                ssize_t n = read(fd, buf, sizeof(buf));
                size_t start = 0;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n <= 0) {
                        tool_server_fail(srv, "the tool server closed its output");
                        return;
                }
                for (size_t i = 0; i < (size_t)n; i++) {
                        if (buf[i] != '\n')
                                continue;
                        if (srv->line.len) {
                                text_append(&srv->line, buf + start, i - start);
                                server_line(srv, srv->line.data, srv->line.len);
                                text_clear(&srv->line);
                        } else {
                                server_line(srv, buf + start, i - start);
                        }
                        start = i + 1;
                }
                if (srv->line.len + ((size_t)n - start) > TOOL_IO_MAX) {
                        tool_server_fail(srv, "the tool server sent a reply over 1 MiB");
                        return;
                }
                text_append(&srv->line, buf + start, (size_t)n - start);
        }
}

static void server_on_io(int fd, uint32_t events, void *data) {
        struct tool_server *srv = data;
        struct tools *t = srv->scope->owner;
        bool over = false;
        int r;

        if (fd == srv->in_fd) {
                r = tool_pipe_flush(t, fd, srv->inbuf.data, srv->inbuf.len, &srv->in_off);
                if (r < 0) {
                        tool_server_fail(srv, "the tool server closed its input");
                        return;
                }
                if (r == 1) {
                        text_clear(&srv->inbuf);
                        srv->in_off = 0;
                        loop_mod_fd(t->loop, fd, 0);
                }
                return;
        }
        if (fd == srv->err_fd) {
                if (tool_pipe_drain(fd, &srv->err, 0, true, &over) != 0)
                        tool_close_watched(t, &srv->err_fd);
                return;
        }
        server_read(srv, fd);
}

static struct tool_server *server_start(struct tool_scope *sc, const struct tool_def *d, bool global) {
        struct tools *t = sc->owner;
        struct tool_server *srv = calloc(1, sizeof(*srv));
        int fds[3];

        if (!srv)
                return NULL;
        srv->scope = sc;
        srv->global = global;
        srv->in_fd = srv->out_fd = srv->err_fd = -1;
        list_init(&srv->calls);
        list_prepend(&sc->servers, &srv->link);
        srv->command_key = strdup(d->command_key);
        if (!srv->command_key || tool_proc_start(t, d, server_exited, srv, fds, &srv->proc) < 0) {
                server_free(srv);
                return NULL;
        }
        srv->pid = srv->proc->pid;
        srv->in_fd = fds[0];
        srv->out_fd = fds[1];
        srv->err_fd = fds[2];
        if (loop_add_fd(t->loop, srv->in_fd, 0, server_on_io, srv) < 0 ||
            loop_add_fd(t->loop, srv->out_fd, EPOLLIN, server_on_io, srv) < 0 ||
            loop_add_fd(t->loop, srv->err_fd, EPOLLIN, server_on_io, srv) < 0) {
                server_free(srv);
                return NULL;
        }
        log_info("tool server started for session %s: %s (pid %d)", sc->host.name(sc->host.data), srv->command_key,
                 (int)srv->pid);
        return srv;
}

static void server_on_timeout(void *data) {
        struct tool_call *c = data;
        struct tool_server *srv = c->server;
        char msg[160];

        snprintf(msg, sizeof(msg), "the tool server did not answer within the timeout of %g s; it was restarted",
                 c->def->timeout_s);
        tool_call_finish(c, NULL, msg, true);
        /* A server that does not answer one call is taken to be stuck. */
        tool_server_fail(srv, "the tool server was restarted after another call to it timed out");
}

int tool_server_call(struct tool_call *c, struct tool_scope *def_scope) {
        struct tool_scope *sc = c->waiter;
        bool global = def_scope->session_id == 0;
        struct tool_server *srv, *found = NULL;
        char head[96];
        int n, e;

        list_for_each(srv, tmp, &sc->servers, struct tool_server, link) {
                if (srv->global == global && strcmp(srv->command_key, c->def->command_key) == 0) {
                        found = srv;
                        break;
                }
        }
        if (!found && !(found = server_start(sc, c->def, global)))
                return -ECHILD;
        srv = found;
        c->server = srv;
        c->server_id = ++srv->next_id;
        list_prepend(&srv->calls, &c->server_link);
        /* {"id":N,"tool":"NAME","args":ARGS}: NAME is a syntactic R name,
         * which needs no escaping. */
        n = snprintf(head, sizeof(head), "{\"id\":%llu,\"tool\":\"", (unsigned long long)c->server_id);
        if (text_append(&srv->inbuf, head, (size_t)n) < 0 ||
            text_append(&srv->inbuf, c->def->name, strlen(c->def->name)) < 0 ||
            text_append(&srv->inbuf, "\",\"args\":", 9) < 0 ||
            text_append(&srv->inbuf, c->args_text, c->args_len - 1 /* its newline */) < 0 ||
            text_append(&srv->inbuf, "}\n", 2) < 0)
                return -ENOMEM;
        if (tool_call_arm_timeout(c, server_on_timeout) < 0)
                return -ENOMEM;
        e = tool_pipe_flush(c->owner, srv->in_fd, srv->inbuf.data, srv->inbuf.len, &srv->in_off);
        if (e == 1) {
                text_clear(&srv->inbuf);
                srv->in_off = 0;
        }
        if (e < 0) {
                /* It died: fail this call and the others; the next starts anew. */
                tool_server_fail(srv, "the tool server closed its input");
                return 1; /* finished already */
        }
        return 0;
}
