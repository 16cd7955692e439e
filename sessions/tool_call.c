/* Tool calls (sessions/tools.h): the daemon's own check of each call, its
 * dispatch to exec or server mode, its answer and its audit line, and the
 * run's end for the calls. */
#include "tools_private.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_cleanup.h"
#include "loop.h"
#include "macros.h"
#include "protocol.h"

/* Audit lines keep this much of the arguments. */
#define AUDIT_ARGS_MAX 1024u
/* Refused calls (unknown tool, bad arguments) logged one by one per run;
 * the rest are counted and summed up in one line at the run's end, so that
 * a run cannot turn its calls into audit log bytes (docs/security.md). */
#define AUDIT_REFUSED_FULL 10u

static void call_audit(struct tool_call *c, const char *error) {
        struct tool_scope *sc = c->waiter;
        size_t cut = MIN(c->args_len, (size_t)AUDIT_ARGS_MAX);
        json_t *ev;

        if (!sc)
                return;
        while (cut < c->args_len && cut > 0 && ((unsigned char)c->args_text[cut] & 0xC0) == 0x80)
                cut--;
        ev = json_pack("{s:s, s:o, s:s%, s:f, s:s}", "event", "tool_call", "tool",
                       tool_json_string_clean(c->name ? c->name : ""), "args", c->args_text ? c->args_text : "",
                       c->args_text ? MIN(cut, c->args_len - 1) : 0, "elapsed_ms",
                       round((double)(now_ns() - c->start_ns) / 1e3) / 1e3, "status", error ? "error" : "ok");
        if (ev && error)
                json_object_set_new(ev, "error", tool_json_string_clean(error));
        if (ev)
                sc->host.audit(sc->host.data, ev);
}

static void call_free(struct tool_call *c) {
        struct tools *t = c->owner;

        loop_timer_free(c->timer);
        tool_proc_abandon(&c->proc);
        tool_close_watched(t, &c->in_fd);
        tool_close_watched(t, &c->out_fd);
        tool_close_watched(t, &c->err_fd);
        list_unlink(&c->server_link);
        text_free(&c->out);
        text_free(&c->err);
        tool_def_unref(c->def);
        free(c->name);
        free(c->args_text);
        free(c);
}

/* Answer call id of sc's worker (value not stolen). */
static void send_result(struct tool_scope *sc, json_int_t id, json_t *value, const char *error) {
        _cleanup_json_ json_t *m = protocol_tool_result(id, value, error);

        if (m)
                sc->host.send(sc->host.data, m);
}

void tool_call_finish(struct tool_call *c, json_t *value, const char *error, bool send) {
        struct tool_scope *sc = c->waiter;

        if (sc && sc->pending == c)
                sc->pending = NULL;
        if (sc && send)
                send_result(sc, c->id, value, error);
        if (!c->quiet)
                call_audit(c, error);
        json_decref(value);
        call_free(c);
}

int tool_call_arm_timeout(struct tool_call *c, void (*fn)(void *)) {
        c->timer = loop_timer_new(c->owner->loop, fn, c);
        if (!c->timer)
                return -ENOMEM;
        loop_timer_arm(c->timer, c->start_ns + (uint64_t)(c->def->timeout_s * 1e9));
        return 0;
}

/* A call refused before it started: answered at once; logged if it is one
 * of the run's first AUDIT_REFUSED_FULL refusals, else counted. */
static void refuse(struct tool_call *c, const char *error) {
        struct tool_scope *sc = c->waiter;

        if (++sc->refused > AUDIT_REFUSED_FULL) {
                sc->refused_unlogged++;
                c->quiet = true;
        }
        tool_call_finish(c, NULL, error, true);
}

/* The arguments as the tool reads them: one JSON object and a newline;
 * text (len bytes) when the frame's own is there, else args dumped. */
static char *args_line(const json_t *args, const char *text, size_t *len) {
        _cleanup_free_ char *json = text ? NULL : json_dumps(args, JSON_COMPACT);
        struct text line = {0};

        if (!text) {
                if (!json)
                        return NULL;
                text = json;
                *len = strlen(json);
        }
        if (text_reserve(&line, *len + 1) < 0 || text_append(&line, text, *len) < 0 || text_append(&line, "\n", 1) < 0) {
                text_free(&line);
                return NULL;
        }
        return text_steal(&line, len);
}

void tool_scope_call(struct tool_scope *sc, uint64_t seq, json_int_t id, const char *tool, json_t *args,
                     const char *args_text, size_t args_len) {
        struct tools *t = sc->owner;
        struct tool_entry *e;
        struct tool_call *c;
        char msg[512];
        int r;

        if (sc->call_seq != seq) {
                sc->call_seq = seq;
                sc->refused = sc->refused_unlogged = 0;
        }
        /* A new call while one is in flight: the worker gave up on the old
         * one (its code caught an interrupt); no reply goes to it. */
        if (sc->pending)
                tool_call_finish(sc->pending, NULL, "abandoned by the worker", false);
        c = calloc(1, sizeof(*c));
        if (!c) {
                /* Still an answer: the worker waits for one. */
                send_result(sc, id, NULL, "out of memory");
                return;
        }
        *c = (struct tool_call){.owner = t, .waiter = sc, .id = id, .start_ns = now_ns(), .in_fd = -1,
                                .out_fd = -1, .err_fd = -1};
        list_init(&c->server_link);
        c->name = strdup(tool);
        c->args_len = args_len;
        c->args_text = args_line(args, args_text, &c->args_len);
        if (!c->name || !c->args_text) {
                refuse(c, "out of memory");
                return;
        }
        e = tool_visible_entry(sc, tool);
        if (!e) {
                /* Cut anywhere; the message is cleaned where it is sent. */
                snprintf(msg, sizeof(msg), "unknown tool \"%s\"", tool);
                refuse(c, msg);
                return;
        }
        c->def = tool_def_ref(e->def);
        if (c->args_len - 1 > TOOL_IO_MAX) {
                refuse(c, "the tool call's arguments are over 1 MiB");
                return;
        }
        if (tool_def_check_args(c->def, args, msg, sizeof(msg)) < 0) {
                refuse(c, msg);
                return;
        }
        sc->pending = c;
        r = c->def->server ? tool_server_call(c, e->scope) : tool_exec_start(c);
        if (r < 0) {
                snprintf(msg, sizeof(msg), "the tool could not be started: %s", strerror(-r));
                tool_call_finish(c, NULL, msg, true);
        }
}

void tool_scope_run_ended(struct tool_scope *sc) {
        if (sc->pending)
                tool_call_finish(sc->pending, NULL, "cancelled: the run ended", false);
        if (sc->dirty)
                tool_scope_worker_sync(sc);
}

void tool_scope_run_summary(struct tool_scope *sc, uint64_t seq, unsigned dropped) {
        unsigned refused = 0, unlogged = 0;
        json_t *ev;

        if (sc->call_seq == seq) {
                refused = sc->refused;
                unlogged = sc->refused_unlogged;
                sc->refused = sc->refused_unlogged = 0;
        }
        if (!unlogged && !dropped)
                return;
        ev = json_pack("{s:s, s:I, s:i, s:i, s:i}", "event", "tool_calls_refused", "seq", (json_int_t)seq, "refused",
                       (int)refused, "not_logged", (int)unlogged, "dropped", (int)dropped);
        if (ev)
                sc->host.audit(sc->host.data, ev);
}
