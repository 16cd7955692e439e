#include "result.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "loop.h"
#include "macros.h"
#include "monitor.h"
#include "run.h"
#include "persist.h"
#include "session_private.h"
#include "snapshot.h"
#include "tools.h"
#include "workspace.h"

/* result.json names at most this many files a run created or changed. */
#define RUN_FILES_MAX 100

struct result {
        unsigned refs;
        uint64_t seq;
        enum run_status status;
        /* The files read with cat: control characters shown escaped
         * (common/escape.h); result_json has the exact text. */
        struct text output;      /* formatted value + "\n"; empty after an error */
        struct text error;       /* message + "\n"; empty on success */
        struct text console;
        struct text result_json; /* the result.json file */
        struct text value_json;  /* the value.json file */
        json_t *pending;         /* result.json before its files are known; NULL once published */
};

static const char *const status_words[] = {"ok", "error", "timeout", "killed", "crashed"};
static const char *const kind_words[ERROR_KIND_COUNT] = {
        [ERROR_NONE] = "",           [ERROR_SYNTAX] = "syntax",   [ERROR_RUNTIME] = "runtime",
        [ERROR_TOOL] = "tool",       [ERROR_INTERRUPTED] = "interrupted", [ERROR_TIMEOUT] = "timeout",
        [ERROR_LIMIT] = "limit",     [ERROR_KILLED] = "killed",   [ERROR_CRASHED] = "crashed",
        [ERROR_DEAD] = "dead",
};

struct result *result_ref(struct result *r) {
        if (r)
                r->refs++;
        return r;
}

void result_unref(struct result *r) {
        if (!r || --r->refs > 0)
                return;
        text_free(&r->output);
        text_free(&r->error);
        text_free(&r->console);
        text_free(&r->result_json);
        text_free(&r->value_json);
        json_decref(r->pending);
        free(r);
}

const struct text *result_text(const struct result *r, enum result_file which) {
        static const struct text empty = {(char *)"", 0, 0};

        if (!r)
                return &empty;
        switch (which) {
        case RESULT_OUTPUT: return &r->output;
        case RESULT_ERROR: return &r->error;
        case RESULT_CONSOLE: return &r->console;
        case RESULT_JSON: return &r->result_json;
        case RESULT_VALUE_JSON: return &r->value_json;
        }
        return &empty;
}

/* Append text to a file people read with cat (output, error): control
 * characters shown escaped, newlines and tabs kept (common/escape.h). */
static void text_append_shown(struct text *t, const char *text, size_t n) {
        char *escaped;
        size_t len;

        if (!text_needs_escape(text, n, ESCAPE_KEEP_LINES)) {
                text_append(t, text, n);
                return;
        }
        escaped = text_escape_dup(text, n, ESCAPE_KEEP_LINES, &len);
        if (escaped)
                text_append(t, escaped, len);
        free(escaped);
}

/* Append a JSON text and a newline to result.json or value.json.  jansson
 * escapes the C0 controls but writes DEL and the C1 controls (U+0080-U+009F:
 * U+009B is CSI) raw, and README tells users to cat these files: those
 * become \u00HH, a JSON escape, so the file reads back as the same JSON
 * value (common/escape.h, as the log does).  jansson's compact text has no
 * raw newline or tab and is valid UTF-8, so nothing else changes.  Out of
 * memory: nothing is appended (as when json_dumps fails). */
static void text_append_json_line(struct text *t, const char *s) {
        _cleanup_free_ char *escaped = NULL;
        size_t n;

        if (!s)
                return;
        n = strlen(s);
        if (text_needs_escape(s, n, ESCAPE_JSON)) {
                if (!(escaped = text_escape_dup(s, n, ESCAPE_JSON, &n)))
                        return;
                s = escaped;
        }
        text_append(t, s, n);
        text_append(t, "\n", 1);
}

struct result *result_build(struct session *s, const struct run_end *end) {
        struct run *r = s->run;
        struct result *res = calloc(1, sizeof(*res));
        _cleanup_free_ char *vj = NULL;
        double elapsed_ms = (double)(now_ns() - r->start_ns) / 1e6;
        const char *error = end->error;
        enum error_kind kind = end->kind;
        char full_note[4096] = "";
        bool ok = end->status == RUN_OK;
        json_t *j, *value = end->value ? end->value : json_null();

        if (!res)
                return NULL;
        /* A write that failed because the workspace is full reads "No space
         * left on device" in R; say which limit that was. */
        if (!ok && error && strstr(error, "No space left on device") && s->workspace &&
            workspace_usage(s->workspace) + (64 << 10) >= s->owner->opt->files_max_bytes) {
                snprintf(full_note, sizeof(full_note),
                         "%.3800s (the workspace /work is full: files_max_bytes is %lld bytes)", error,
                         s->owner->opt->files_max_bytes);
                error = full_note;
                if (!end->limit)
                        kind = ERROR_LIMIT;
        }
        res->refs = 1;
        res->seq = r->seq;
        res->status = end->status;
        res->console = r->console;
        r->console = (struct text){0};
        if (ok) {
                text_append_shown(&res->output, end->output, strlen(end->output));
                text_append(&res->output, "\n", 1);
                vj = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
                text_append_json_line(&res->value_json, vj);
        } else {
                text_append_shown(&res->error, error, strlen(error));
                text_append(&res->error, "\n", 1);
        }
        j = json_pack("{s:I, s:s, s:O?, s:s?, s:s, s:s%, s:o, s:f, s:I}", "seq", (json_int_t)r->seq, "status",
                      status_words[end->status], "value", ok ? value : NULL, "output", ok ? end->output : NULL, "error",
                      ok ? "" : error, "console", res->console.data ? res->console.data : "", res->console.len,
                      "warnings", end->warnings ? json_incref(end->warnings) : json_array(), "elapsed_ms",
                      round(elapsed_ms * 1000) / 1000, "tool_calls", (json_int_t)r->tool_calls);
        if (j && !ok)
                json_object_set_new(j, "error_kind", json_string(kind_words[kind]));
        if (j && end->value_note)
                json_object_set_new(j, "value_note", json_string(end->value_note));
        if (j && (end->limit || full_note[0]))
                json_object_set_new(j, "limit", json_string(end->limit ? end->limit : "files"));
        /* What the daemon did to the session since its last run (an idle
         * worker's threads or processes: sessions/monitor.c); valid UTF-8,
         * the daemon's own words. */
        if (j && s->idle_notice) {
                json_object_set_new(j, "notice", json_string(s->idle_notice));
                free(s->idle_notice);
                s->idle_notice = NULL;
        }
        /* The first result after a restore says what it could not carry
         * (sessions/snapshot.h). */
        if (j && s->restore_notes) {
                json_object_set_new(j, "restore_notes", s->restore_notes);
                s->restore_notes = NULL;
        }
        /* files comes when the after-scan is done (result_publish). */
        res->pending = j;
        /* result.json has the exact text; from now on the console file
         * shows the escaped one. */
        if (r->console_escaped) {
                text_free(&res->console);
                res->console = r->console_shown;
                r->console_shown = (struct text){0};
        }
        return res;
}

/* result.json gets its files (what changed between before and now, both
 * may be NULL) and its text; now is kept as the next run's before. */
static void result_set_files(struct session *s, struct result *res, struct workspace_snapshot *now) {
        struct run *r = s->run;
        json_t *j = res->pending;
        bool truncated = false;
        json_t *files = r->before && now ? workspace_compare(s->workspace, r->before, now, RUN_FILES_MAX, &truncated)
                                         : json_array();
        _cleanup_free_ char *rj = NULL;

        res->pending = NULL;
        json_object_set_new(j, "files", files ? files : json_array());
        if (truncated)
                json_object_set_new(j, "files_truncated", json_true());
        rj = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
        json_decref(j);
        text_append_json_line(&res->result_json, rj);
        if (now)
                workspace_keep_snapshot(s->workspace, now);
}

static void result_publish_now(struct session *s, struct result *res);

static void on_after_scanned(void *data, struct workspace_snapshot *now) {
        struct session *s = data;
        struct run *r = s->run;
        struct result *res = r->ending;

        r->scan = NULL;
        r->ending = NULL;
        result_set_files(s, res, now);
        result_publish_now(s, res);
}

void result_publish(struct session *s, struct result *res) {
        struct run *r = s->run;
        struct workspace_snapshot *now = NULL;

        /* What the run changed needs a scan of the workspace after it: at
         * once for a small one, else off the loop, and the result (its
         * readers, the session's next run) waits for it, no other session
         * does.  The deadline and the monitor have nothing left to watch. */
        if (res->pending && r->before && s->workspace) {
                int e = workspace_scan(s->workspace, on_after_scanned, s, &now, &r->scan);

                if (e == -EINPROGRESS) {
                        loop_timer_arm(r->deadline, 0);
                        loop_timer_arm(r->monitor, 0);
                        r->ending = res;
                        return;
                }
        }
        if (res->pending)
                result_set_files(s, res, now);
        result_publish_now(s, res);
}

static void result_publish_now(struct session *s, struct result *res) {
        struct sessions *t = s->owner;
        struct run *r = s->run;

        t->stats.executions++;
        if (r->sent)
                tool_scope_run_summary(s->tools, r->seq, r->calls_dropped);
        if (res->status == RUN_ERROR)
                t->stats.errors++;
        else if (res->status == RUN_TIMEOUT)
                t->stats.timeouts++;
        else if (res->status == RUN_KILLED)
                t->stats.killed++;
        else if (res->status == RUN_CRASHED)
                t->stats.crashes++;
        session_audit_run_end(s, res->seq, status_words[res->status],
                              round((double)(now_ns() - r->start_ns) / 1e3) / 1e3);
        result_unref(s->last);
        s->last = res;
        run_free(r);
        s->run = NULL;
        if (s->state == SESSION_RUNNING) {
                session_set_state(s, SESSION_IDLE);
                if (s->limits_pending)
                        session_apply_limits(s);
        }
        /* The call the run waited for is cancelled; definitions that changed
         * during the run reach the worker before its next one. */
        tool_scope_run_ended(s->tools);
        if (t->ev.run_ended)
                t->ev.run_ended(s);
        persist_mark_dirty(s);
        /* Forks waiting for the run to end start now. */
        if (s->state == SESSION_IDLE)
                snapshot_session_idle(s);
        /* The readers have their answer; look for what the run may have
         * left behind (off this path: rate-limited, on a timer). */
        monitor_check_leftovers(s);
}
