#include "protocol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macros.h"
#include "utf8.h"

/* ---- the table ----------------------------------------------------------- */

enum field_type {
        F_INT,     /* a JSON integer in [min, max] */
        F_STRING,  /* a string of at most max bytes (valid UTF-8, no NUL: common/frame.h) */
        F_WORD,    /* a string, one of words */
        F_OBJECT,  /* an object */
        F_STRINGS, /* an array of at most max strings, each of at most elem_max bytes */
        F_ANY,     /* any JSON value */
};

struct field {
        const char *name;
        enum field_type type;
        bool required;
        long long min, max;
        size_t elem_max;
        const char *const *words;
};

#define MESSAGE_FIELDS_MAX 11

struct message {
        const char *type;
        unsigned phases; /* bit per enum worker_phase in which it may come (or be sent) */
        /* Worker -> daemon: the frame's bounds, checked before it is
         * parsed (common/frame.h: the bytes before it is buffered whole, the
         * JSON values before jansson builds a node for each). */
        size_t max_bytes, max_values;
        struct field fields[MESSAGE_FIELDS_MAX];
        /* Why accepting (or sending) it is safe: the same words as
         * docs/protocol.md's table. */
        const char *safe;
};

#define IN(p) (1u << (p))
/* A string of at most n bytes as JSON text: jansson writes a control
 * character as \u00XX, six bytes for one; and the frame's other fields. */
#define ESCAPED(n) (6u * (size_t)(n) + 256u)
#define SEQ {"seq", F_INT, true, 1, INT64_MAX, 0, NULL}
/* JSON integers that a double holds exactly: R counts in doubles. */
#define ID_MAX (1LL << 53)

static const char *const status_words[] = {"ok", "error", "interrupted", NULL};
static const char *const kind_words[] = {"", "syntax", "runtime", "tool", "interrupted", NULL};
static const char *const limit_words[] = {"cpu", "memory", "fsize", "nproc", "nofile", "stack", NULL};

/* Worker -> daemon, indexed by enum worker_message. */
static const struct message worker_messages[MSG_WORKER_COUNT] = {
        [MSG_READY] = {"ready", IN(PHASE_STARTING), 4096, 64,
                       {{"r_version", F_STRING, true, 0, 64, 0, NULL},
                        {"reserved_bytes", F_INT, false, 0, PROTOCOL_RESERVED_MAX, 0, NULL}},
                       "sent once, before any user code ran in the process: the one figure the daemon takes "
                       "from it (reserved_bytes, added to RLIMIT_AS) is bounded"},
        [MSG_ATTACHED] = {"attached", IN(PHASE_ATTACHING), 64, 4, {{NULL}},
                          "carries nothing: it only moves the session to idle, which the daemon would reach "
                          "anyway; a worker that lies about attaching runs without /work"},
        [MSG_FATAL] = {"fatal", IN(PHASE_STARTING) | IN(PHASE_WAITING) | IN(PHASE_ATTACHING), ESCAPED(64 << 10), 8,
                       {{"error", F_STRING, true, 0, 64 << 10, 0, NULL}},
                       "only before the worker runs user code; its text is kept (cut to 1000 bytes) as the "
                       "reason for a failed start, shown escaped"},
        [MSG_CONSOLE] = {"console", IN(PHASE_RUNNING), ESCAPED(PROTOCOL_CONSOLE_TEXT_MAX), 8,
                         {SEQ, {"text", F_STRING, true, 0, PROTOCOL_CONSOLE_TEXT_MAX, 0, NULL}},
                         "text of the run under way only: capped at console_max_bytes kept and 64 MiB read per "
                         "run (a flood is a breach), shown escaped"},
        [MSG_TOOL_CALL] = {"tool_call", IN(PHASE_RUNNING), FRAME_TOOL_CALL_BYTES_MAX, FRAME_TOOL_CALL_VALUES_MAX,
                           {SEQ, {"id", F_INT, true, 1, ID_MAX, 0, NULL},
                            {"tool", F_STRING, true, 0, PROTOCOL_TOOL_NAME_MAX, 0, NULL},
                            {"args", F_OBJECT, true, 0, 0, 0, NULL}},
                           "a request, not a command: the daemon checks the tool and every argument again "
                           "(refusals are answered), counts calls (max_tool_calls) and ids only grow"},
        [MSG_RESULT] = {"result", IN(PHASE_RUNNING), FRAME_MAX_BYTES, PROTOCOL_RESULT_VALUES_MAX,
                        {SEQ,
                         {"status", F_WORD, true, 0, 0, 0, status_words},
                         {"output", F_STRING, true, 0, 2 << 20, 0, NULL},
                         {"value", F_ANY, true, 0, 0, 0, NULL},
                         {"value_note", F_STRING, false, 0, 16 << 10, 0, NULL},
                         {"error", F_STRING, true, 0, 128 << 10, 0, NULL},
                         {"warnings", F_STRINGS, true, 0, 1000, 16 << 10, NULL},
                         {"limit", F_WORD, false, 0, 0, 0, limit_words},
                         {"error_kind", F_WORD, false, 0, 0, 0, kind_words + 1},
                         /* Benchmark builds (WORKER_TIMING) only; ignored. */
                         {"worker_ns", F_INT, false, 0, INT64_MAX, 0, NULL}},
                        "ends the run it names and only that one; its texts become files shown escaped, its "
                        "value is data (JSON) that nothing on the host evaluates, and the daemon decides the "
                        "run's status from its own knowledge (deadlines, limits) over the worker's word"},
        [MSG_SNAPSHOT_DONE] = {"snapshot_done", IN(PHASE_SNAPSHOT), ESCAPED(1000 * 1000 + 1000 * 256 + 4096), 2048,
                               {{"notes", F_STRINGS, true, 0, 1000, 1000, NULL},
                                {"packages", F_STRINGS, true, 0, 1000, 256, NULL},
                                {"error", F_STRING, false, 0, 4096, 0, NULL}},
                               "ends the snapshot it answers and only that one; the state itself went through "
                               "the descriptor and is never read by the daemon; its notes and package names are "
                               "bounded texts, shown escaped"},
        [MSG_RESTORED] = {"restored", IN(PHASE_RESTORE), ESCAPED(1000 * 1000 + 4096), 1024,
                          {{"notes", F_STRINGS, true, 0, 1000, 1000, NULL},
                           {"error", F_STRING, false, 0, 4096, 0, NULL}},
                          "ends the restore it answers; its notes are bounded texts the daemon only shows "
                          "(escaped) in the log and the next result.json"},
};

/* Daemon -> worker: what the daemon sends, and when (no frame bounds: the
 * worker trusts the daemon). */
static const struct message daemon_messages[] = {
        {"workspace", IN(PHASE_WAITING), 0, 0, {{NULL}},
         "the first frame of a worker assigned to a session, with the workspace's descriptor (SCM_RIGHTS): what "
         "the worker may touch of the host is that one tree"},
        {"warm", IN(PHASE_WAITING), 0, 0, {{NULL}},
         "to a worker that waited 10 ms in the pool: run 1+1 once for itself, nothing sent back, so that the copy-on-write faults of a "
         "first run come before a session takes it; the code is the worker's own constant, nothing the daemon or a "
         "user chose"},
        {"exec", IN(PHASE_IDLE), 0, 0,
         {SEQ, {"code", F_STRING, true, 0, INT64_MAX, 0, NULL}, {"limits", F_OBJECT, true, 0, 0, 0, NULL}},
         "the user's code, to run in the jail; the limits only word messages (the daemon sets the real ones "
         "with prlimit from outside)"},
        {"interrupt", IN(PHASE_RUNNING), 0, 0, {SEQ},
         "names the run it stops, so that a late one is ignored and an early one obeyed"},
        {"define_tool", IN(PHASE_IDLE), 0, 0,
         {{"name", F_STRING, true, 1, 100, 0, NULL},
          {"args", F_OBJECT, true, 0, 0, 0, NULL},
          {"description", F_STRING, true, 0, INT64_MAX, 0, NULL}},
         "between runs only; a definition the daemon accepted (sessions/tool_def.h)"},
        {"remove_tool", IN(PHASE_IDLE), 0, 0, {{"name", F_STRING, true, 1, 100, 0, NULL}}, "between runs only"},
        {"snapshot", IN(PHASE_IDLE), 0, 0, {{NULL}},
         "between runs only, with a descriptor the worker writes its state to (a pipe to another worker, a "
         "file of the daemon's): it can reach nothing else through it"},
        {"restore", IN(PHASE_IDLE), 0, 0, {{"check", F_INT, true, 0, 1, 0, NULL}},
         "between runs only, with a descriptor of a state the worker reads into itself, in its jail (check: "
         "unserialize it first in a child process, so that bytes that crash R take only that child)"},
        {"tool_result", IN(PHASE_RUNNING), 0, 0,
         {{"id", F_INT, true, 1, ID_MAX, 0, NULL}, {"value", F_ANY, false, 0, 0, 0, NULL},
          {"error", F_STRING, false, 0, INT64_MAX, 0, NULL}},
         "the answer to the call the worker waits for, at most 1 MiB of the tool's JSON (TOOL_IO_MAX)"},
};

static const struct field *message_field(const struct message *msg, const char *name) {
        for (size_t i = 0; i < MESSAGE_FIELDS_MAX && msg->fields[i].name; i++)
                if (strcmp(msg->fields[i].name, name) == 0)
                        return &msg->fields[i];
        return NULL;
}

static int word_index(const char *const *words, const char *s) {
        for (int i = 0; words[i]; i++)
                if (strcmp(words[i], s) == 0)
                        return i;
        return -1;
}

static bool field_ok(const struct field *f, const json_t *v) {
        size_t i;
        json_t *x;

        switch (f->type) {
        case F_INT:
                return json_is_integer(v) && json_integer_value(v) >= f->min && json_integer_value(v) <= f->max;
        case F_STRING:
                return json_is_string(v) && json_string_length(v) >= (size_t)f->min &&
                       json_string_length(v) <= (size_t)f->max;
        case F_WORD: return json_is_string(v) && word_index(f->words, json_string_value(v)) >= 0;
        case F_OBJECT: return json_is_object(v);
        case F_STRINGS:
                if (!json_is_array(v) || json_array_size(v) > (size_t)f->max)
                        return false;
                json_array_foreach(v, i, x) if (!json_is_string(x) || json_string_length(x) > f->elem_max) return false;
                return true;
        case F_ANY: return true;
        }
        return false;
}

/* The shape: every field m has is one msg names, of its type and within its
 * bounds, and every required one is there. */
static int check_shape(const json_t *m, const struct message *msg, const char **why) {
        const char *key;
        json_t *v;

        json_object_foreach((json_t *)m, key, v) {
                const struct field *f;

                if (strcmp(key, "type") == 0)
                        continue;
                f = message_field(msg, key);
                if (!f) {
                        *why = "a field its message does not have";
                        return -EBADMSG;
                }
                if (!field_ok(f, v)) {
                        *why = "a field of the wrong type or out of bounds";
                        return -EBADMSG;
                }
        }
        for (size_t i = 0; i < MESSAGE_FIELDS_MAX && msg->fields[i].name; i++)
                if (msg->fields[i].required && !json_object_get(m, msg->fields[i].name)) {
                        *why = "a required field is missing";
                        return -EBADMSG;
                }
        return 0;
}

static const char *get_string(const json_t *m, const char *name, size_t *len) {
        json_t *v = json_object_get(m, name);

        if (len)
                *len = json_string_length(v);
        return json_string_value(v);
}

/* ---- worker -> daemon ------------------------------------------------------ */

int protocol_admit_worker_frame(const char *type, size_t type_len, enum worker_phase phase, struct frame_bounds *b,
                                const char **why) {
        for (int t = 0; t < MSG_WORKER_COUNT; t++) {
                const struct message *msg = &worker_messages[t];

                if (strlen(msg->type) != type_len || memcmp(msg->type, type, type_len) != 0)
                        continue;
                if (!(msg->phases & IN(phase))) {
                        *why = "a message the worker may not send now";
                        return -EBADMSG;
                }
                *b = (struct frame_bounds){.max_bytes = msg->max_bytes, .max_values = msg->max_values};
                return 0;
        }
        *why = "a message the worker may not send";
        return -EBADMSG;
}

int protocol_check_worker_frame(const json_t *m, const struct protocol_context *ctx, struct worker_frame *out,
                                const char **why) {
        const char *type = json_string_value(json_object_get(m, "type"));
        struct worker_frame f = {0};
        json_t *v;
        int t, e;

        for (t = 0; t < MSG_WORKER_COUNT; t++)
                if (type && strcmp(type, worker_messages[t].type) == 0)
                        break;
        if (t == MSG_WORKER_COUNT) {
                *why = "a message the worker may not send";
                return -EBADMSG;
        }
        if (!(worker_messages[t].phases & IN(ctx->phase))) {
                *why = "a message the worker may not send now";
                return -EBADMSG;
        }
        e = check_shape(m, &worker_messages[t], why);
        if (e < 0)
                return e;
        /* The values, message by message (each case says what the handler
         * then relies on). */
        f.type = (enum worker_message)t;
        switch (f.type) {
        case MSG_READY:
                f.u.ready.r_version = get_string(m, "r_version", NULL);
                v = json_object_get(m, "reserved_bytes");
                f.u.ready.reserved_bytes = v ? (long long)json_integer_value(v) : 0;
                break;
        case MSG_ATTACHED: break;
        case MSG_FATAL: f.u.fatal.error = get_string(m, "error", &f.u.fatal.len); break;
        case MSG_CONSOLE:
        case MSG_TOOL_CALL:
        case MSG_RESULT:
                /* Only for the run under way: a frame of an earlier run is
                 * a worker that lost count, or one that tries to answer
                 * for a run it did not do. */
                if ((uint64_t)json_integer_value(json_object_get(m, "seq")) != ctx->seq) {
                        *why = "a frame for another run";
                        return -EBADMSG;
                }
                if (f.type == MSG_CONSOLE) {
                        f.u.console.text = get_string(m, "text", &f.u.console.len);
                } else if (f.type == MSG_TOOL_CALL) {
                        /* Fresh ids: a replayed one could be taken for the
                         * answer to an earlier call. */
                        f.u.tool_call.id = json_integer_value(json_object_get(m, "id"));
                        if (f.u.tool_call.id <= ctx->last_call_id) {
                                *why = "a tool_call id that does not grow";
                                return -EBADMSG;
                        }
                        f.u.tool_call.tool = get_string(m, "tool", NULL);
                        f.u.tool_call.args = json_object_get(m, "args");
                } else {
                        const char *kind = get_string(m, "error_kind", NULL), *limit = get_string(m, "limit", NULL);

                        f.u.result.status = (enum worker_status)word_index(status_words, get_string(m, "status", NULL));
                        f.u.result.kind = kind ? (enum worker_error_kind)word_index(kind_words, kind) : WORKER_KIND_NONE;
                        /* The status and the kind agree: none for ok,
                         * "interrupted" exactly for interrupted. */
                        if ((f.u.result.status == WORKER_OK) != (f.u.result.kind == WORKER_KIND_NONE) ||
                            (f.u.result.status == WORKER_INTERRUPTED) !=
                                    (f.u.result.kind == WORKER_KIND_INTERRUPTED)) {
                                *why = "a result whose error_kind does not fit its status";
                                return -EBADMSG;
                        }
                        f.u.result.output = get_string(m, "output", &f.u.result.output_len);
                        f.u.result.value = json_object_get(m, "value");
                        f.u.result.value_note = get_string(m, "value_note", NULL);
                        f.u.result.error = get_string(m, "error", NULL);
                        f.u.result.warnings = json_object_get(m, "warnings");
                        f.u.result.limit = limit ? word_index(limit_words, limit) : -1;
                }
                break;
        case MSG_SNAPSHOT_DONE:
        case MSG_RESTORED:
                f.u.state.notes = json_object_get(m, "notes");
                f.u.state.packages = json_object_get(m, "packages");
                f.u.state.error = get_string(m, "error", NULL);
                break;
        case MSG_WORKER_COUNT: break;
        }
        *out = f;
        return 0;
}

/* ---- daemon -> worker -------------------------------------------------------- */

int protocol_check_daemon_frame(const json_t *m, enum worker_phase phase, const char **why) {
        const char *type = json_string_value(json_object_get(m, "type"));

        for (size_t i = 0; i < ARRAY_SIZE(daemon_messages); i++) {
                if (!type || strcmp(type, daemon_messages[i].type) != 0)
                        continue;
                if (phase < PHASE_COUNT && !(daemon_messages[i].phases & IN(phase))) {
                        *why = "a message the daemon does not send now";
                        return -EBADMSG;
                }
                return check_shape(m, &daemon_messages[i], why);
        }
        *why = "a message the daemon does not send";
        return -EBADMSG;
}

json_t *protocol_workspace(void) { return json_pack("{s:s}", "type", "workspace"); }
json_t *protocol_warm(void) { return json_pack("{s:s}", "type", "warm"); }

json_t *protocol_exec(uint64_t seq, const char *code, size_t len, const struct limits *l) {
        return json_pack("{s:s, s:I, s:s%, s:o}", "type", "exec", "seq", (json_int_t)seq, "code", code, len, "limits",
                         limits_to_json(l));
}

json_t *protocol_interrupt(uint64_t seq) { return json_pack("{s:s, s:I}", "type", "interrupt", "seq", (json_int_t)seq); }

json_t *protocol_define_tool(const char *name, json_t *args, const char *description) {
        return json_pack("{s:s, s:s, s:O, s:s}", "type", "define_tool", "name", name, "args", args, "description",
                         description);
}

json_t *protocol_snapshot(void) { return json_pack("{s:s}", "type", "snapshot"); }
json_t *protocol_restore(bool check) { return json_pack("{s:s, s:i}", "type", "restore", "check", check ? 1 : 0); }

json_t *protocol_remove_tool(const char *name) { return json_pack("{s:s, s:s}", "type", "remove_tool", "name", name); }

json_t *protocol_tool_result(json_int_t id, json_t *value, const char *error) {
        size_t len;
        char *clean;
        json_t *m;

        if (!error)
                return json_pack("{s:s, s:I, s:O}", "type", "tool_result", "id", id, "value", value ? value : json_null());
        /* A message from a host program, or cut with %.64s-style formats:
         * jansson refuses a string that is not valid UTF-8. */
        clean = utf8_sanitize_dup(error, strlen(error), &len);
        m = clean ? json_pack("{s:s, s:I, s:s%}", "type", "tool_result", "id", id, "error", clean, len) : NULL;
        free(clean);
        return m;
}
