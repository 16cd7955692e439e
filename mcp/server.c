#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "json_cleanup.h"
#include "log.h"
#include "macros.h"
#include "tools.h"

/* How long a private mount may take to come up, and the session to open. */
#define SETUP_TIMEOUT_MS 30000
/* How often the mount point is looked at while the daemon starts. */
#define MOUNT_CHECK_MS 2
/* How often the console of a run is read for progress notifications. */
#define PROGRESS_INTERVAL_MS 100
/* The most console bytes one progress notification carries. */
#define PROGRESS_CHUNK (16u << 10)
/* A partial console line longer than this is sent without its newline. */
#define PROGRESS_PARTIAL_MAX (4u << 10)
/* Past the run's timeout and the mount's grace period, how long before we
 * interrupt it ourselves, and then how long before we give up on it. */
#define WATCHDOG_SLACK_MS 10000
/* Stop reading stdin while this much output waits for the client. */
#define OUT_BACKLOG_MAX (8u << 20)
/* Progress is advisory: none is queued behind this much output. */
#define OUT_PROGRESS_MAX (1u << 20)

const struct mcp_version mcp_versions[] = {
        {"2024-11-05", 0},
        {"2025-03-26", MCP_F_BATCH | MCP_F_ANNOTATIONS | MCP_F_PROGRESS_MESSAGE},
        {"2025-06-18", MCP_F_ANNOTATIONS | MCP_F_PROGRESS_MESSAGE | MCP_F_STRUCTURED},
        {"2025-11-25", MCP_F_ANNOTATIONS | MCP_F_PROGRESS_MESSAGE | MCP_F_STRUCTURED | MCP_F_ARG_ERRORS_AS_RESULTS},
};
const unsigned mcp_n_versions = ARRAY_SIZE(mcp_versions);

const struct mcp_version *mcp_negotiate(const char *name) {
        for (unsigned i = 0; i < mcp_n_versions; i++)
                if (strcmp(mcp_versions[i].name, name) == 0)
                        return &mcp_versions[i];
        return &mcp_versions[mcp_n_versions - 1];
}

long long now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- responses ------------------------------------------------------------ */

/* The responses of one JSON-RPC batch (2025-03-26), sent as one array when
 * its last request is answered. */
struct batch {
        json_t *responses;
        unsigned refs;
};

static void batch_unref(struct server *s, struct batch *b) {
        if (!b || --b->refs > 0)
                return;
        /* A batch of notifications only gets no response at all. */
        if (json_array_size(b->responses) > 0)
                out_queue_push(&s->out, b->responses);
        else
                json_decref(b->responses);
        free(b);
}

static void respond(struct server *s, struct batch *b, json_t *response) {
        if (!response) {
                log_error("out of memory building a response");
                return;
        }
        if (b)
                json_array_append_new(b->responses, response);
        else if (out_queue_push(&s->out, response) < 0)
                log_error("a response could not be encoded");
}

static void request_free(struct server *s, struct request *req) {
        if (!req)
                return;
        batch_unref(s, req->batch);
        json_decref(req->msg);
        free(req);
}

void server_reply_result(struct server *s, struct request *req, json_t *result) {
        if (req->cancelled)
                json_decref(result);
        else
                respond(s, req->batch, rpc_result(req->id, result));
        request_free(s, req);
}

void server_reply_error(struct server *s, struct request *req, int code, const char *message) {
        if (!req->cancelled)
                respond(s, req->batch, rpc_error(req->id, code, message, NULL));
        request_free(s, req);
}

void server_notify(struct server *s, json_t *notification) {
        if (notification && out_queue_push(&s->out, notification) < 0)
                log_error("a notification could not be encoded");
}

/* ---- the mount and the session ---------------------------------------------- */

static void *opener_main(void *arg) {
        struct server *s = arg;
        char byte = 1;
        ssize_t ignored;

        /* A thread of the server, same privileges: it only makes or opens
         * the session, which may take as long as a worker takes to start. */
        s->opened_err = rsession_open(s->mount, s->cfg.session, s->cfg.timeout_s, &s->opened, s->opened_msg,
                                      sizeof(s->opened_msg));
        ignored = write(s->opener_pipe[1], &byte, 1);
        (void)ignored;
        return NULL;
}

static void setup_failed(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void setup_failed(struct server *s, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(s->setup_error, sizeof(s->setup_error), fmt, ap);
        va_end(ap);
        s->setup = SETUP_FAILED;
        log_error("%s", s->setup_error);
}

/* The daemon-wide settings messages and the watchdog use. */
static void read_mount_config(struct server *s) {
        char path[PATH_MAX];
        _cleanup_json_ json_t *c = NULL;
        json_t *v;

        s->grace_s = 2;
        snprintf(path, sizeof(path), "%s/config", s->mount);
        c = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
        v = json_object_get(c, "grace");
        if (json_is_number(v) && json_number_value(v) >= 0 && json_number_value(v) < 3600)
                s->grace_s = json_number_value(v);
        v = json_object_get(c, "files_max_bytes");
        if (json_is_integer(v))
                s->files_max_bytes = json_integer_value(v);
        v = json_object_get(c, "timeout");
        s->mount_timeout_s = json_is_number(v) ? json_number_value(v) : 0;
}

static void start_opener(struct server *s) {
        read_mount_config(s);
        if (pipe2(s->opener_pipe, O_CLOEXEC) < 0) {
                setup_failed(s, "pipe: %s", strerror(errno));
                return;
        }
        if (pthread_create(&s->opener, NULL, opener_main, s) != 0) {
                setup_failed(s, "cannot start a thread to open the session");
                return;
        }
        s->opener_started = true;
        s->setup = SETUP_OPENING;
}

static void opener_finished(struct server *s) {
        char byte;
        ssize_t ignored = read(s->opener_pipe[0], &byte, 1);

        (void)ignored;
        pthread_join(s->opener, NULL);
        s->opener_done = true;
        if (s->setup != SETUP_OPENING) { /* we gave up on it meanwhile */
                rsession_close(s->opened);
                s->opened = NULL;
                return;
        }
        if (s->opened_err < 0) {
                setup_failed(s, "no R session: %s", s->opened_msg);
                return;
        }
        s->rs = TAKE_PTR(s->opened);
        s->setup = SETUP_READY;
        log_info("serving session %s of %s (%s), ready %lld ms after start", s->rs->name, s->mount,
                 s->rs->owned ? "closed when the client goes" : "named: it outlives this server",
                 now_ms() - s->start_ms);
}

static void setup_begin(struct server *s) {
        char path[PATH_MAX], err[1024];
        _cleanup_free_ char *daemon = NULL;
        struct stat st;
        int r;

        s->start_ms = now_ms();
        s->setup_deadline_ms = s->start_ms + SETUP_TIMEOUT_MS;
        if (s->cfg.mount) {
                s->mount = strdup(s->cfg.mount);
                snprintf(path, sizeof(path), "%s/sessions", s->cfg.mount);
                if (!s->mount || stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
                        setup_failed(s, "no securerfs mount at %s (%s/sessions is missing)", s->cfg.mount,
                                     s->cfg.mount);
                        return;
                }
                start_opener(s);
                return;
        }
        daemon = private_mount_find_daemon();
        if (!daemon) {
                setup_failed(s, "securerfs not found (not in $SECURERFS_BIN, next to securerfs-mcp, nor on PATH): "
                                "install it, or give a running mount with --mount or SECURERFS_MOUNT");
                return;
        }
        r = private_mount_start(daemon, s->cfg.daemon_options, &s->pm, err, sizeof(err));
        if (r < 0) {
                setup_failed(s, "cannot start a private securerfs (%s): %s", daemon, err);
                return;
        }
        s->mount = strdup(s->pm->mnt);
        log_info("private securerfs %s (pid %ld) mounting on %s", daemon, (long)s->pm->pid, s->pm->mnt);
        s->setup = SETUP_MOUNTING;
}

static void setup_check_mount(struct server *s) {
        int r = private_mount_ready(s->pm);

        if (r > 0) {
                log_debug("mounted %lld ms after start", now_ms() - s->start_ms);
                start_opener(s);
                return;
        }
        if (r < 0 || now_ms() > s->setup_deadline_ms) {
                private_mount_read_log(s->pm);
                setup_failed(s, "the private securerfs did not mount%s%.*s",
                             r < 0 ? " (it exited)" : " within its deadline", (int)s->pm->tail_len, s->pm->tail);
        }
}

/* ---- requests --------------------------------------------------------------- */

static bool is_id(json_t *v) {
        return json_is_string(v) || json_is_integer(v);
}

static struct request *find_request(struct server *s, json_t *id) {
        if (s->current && json_equal(s->current->id, id))
                return s->current;
        for (struct request *r = s->queue_head; r; r = r->next)
                if (json_equal(r->id, id))
                        return r;
        return NULL;
}

static void enqueue(struct server *s, struct request *req) {
        if (s->queue_tail)
                s->queue_tail->next = req;
        else
                s->queue_head = req;
        s->queue_tail = req;
}

static void handle_cancelled(struct server *s, json_t *params) {
        json_t *id = json_object_get(params, "requestId");
        struct request *req, **pp;

        if (!is_id(id))
                return; /* nothing to cancel (2025-11-25 lets tasks omit it) */
        req = find_request(s, id);
        if (!req || req->cancelled)
                return; /* unknown or finished: the specification says to ignore it */
        req->cancelled = true;
        if (req == s->current) {
                /* The run goes on until the mount says it ended: interrupt
                 * it, keep the session's state, send no response. */
                int r = rsession_interrupt(s->rs);
                if (r < 0)
                        log_warn("cancel: cannot interrupt the run: %s", strerror(-r));
                return;
        }
        for (pp = &s->queue_head; *pp; pp = &(*pp)->next) {
                if (*pp == req) {
                        *pp = req->next;
                        if (s->queue_tail == req) {
                                s->queue_tail = NULL;
                                for (struct request *r = s->queue_head; r; r = r->next)
                                        s->queue_tail = r;
                        }
                        request_free(s, req);
                        return;
                }
        }
}

static json_t *initialize_result(const struct server *s) {
        json_t *info = json_pack("{s:s, s:s}", "name", "securerfs-mcp", "version", SECURERFS_VERSION);

        if (info && (s->version->features & MCP_F_STRUCTURED))
                json_object_set_new(info, "title", json_string("securerfs: sandboxed R sessions"));
        return json_pack("{s:s, s:{s:{s:b}}, s:o, s:s}", "protocolVersion", s->version->name, "capabilities", "tools",
                         "listChanged", 0, "serverInfo", info, "instructions",
                         "securerfs-mcp runs R code in one sandboxed, persistent R session (securerfs): "
                         "execute_r_code keeps variables between calls; list_files, read_file and write_file "
                         "reach the session's workspace, which is the code's working directory; "
                         "restart_session clears the R state but keeps the files.");
}

/* Check initialize's params as the schema gives them: protocolVersion a
 * string, capabilities an object, clientInfo an object with string name
 * and version. */
static const char *check_initialize(json_t *params) {
        json_t *info = json_object_get(params, "clientInfo");

        if (!json_is_string(json_object_get(params, "protocolVersion")))
                return "initialize: params.protocolVersion must be a string";
        if (!json_is_object(json_object_get(params, "capabilities")))
                return "initialize: params.capabilities must be an object";
        if (!json_is_object(info) || !json_is_string(json_object_get(info, "name")) ||
            !json_is_string(json_object_get(info, "version")))
                return "initialize: params.clientInfo must be an object with string name and version";
        return NULL;
}

/* params._meta, when present: an object whose progressToken, when present,
 * is a string or an integer. */
static const char *check_meta(json_t *params, json_t **token) {
        json_t *meta = json_object_get(params, "_meta"), *t;

        *token = NULL;
        if (!meta)
                return NULL;
        if (!json_is_object(meta))
                return "params._meta must be an object";
        t = json_object_get(meta, "progressToken");
        if (t && !is_id(t))
                return "params._meta.progressToken must be a string or an integer";
        *token = t;
        return NULL;
}

static void handle_request(struct server *s, json_t *msg, const struct rpc_message *m, struct batch *b) {
        const char *why;
        json_t *token, *v;
        struct request *req;
        bool known = strcmp(m->method, "tools/list") == 0 || strcmp(m->method, "tools/call") == 0;

        if (strcmp(m->method, "ping") == 0) {
                /* Answered at once, whatever runs: a client uses it to see
                 * that we are alive. */
                respond(s, b, rpc_result(m->id, json_object()));
                return;
        }
        if (strcmp(m->method, "initialize") == 0) {
                if (s->version) {
                        respond(s, b, rpc_error(m->id, RPC_INVALID_REQUEST, "initialize was already done", NULL));
                        return;
                }
                if (b) {
                        respond(s, b,
                                rpc_error(m->id, RPC_INVALID_REQUEST, "initialize must not be part of a batch", NULL));
                        return;
                }
                if ((why = check_initialize(m->params))) {
                        respond(s, b, rpc_error(m->id, RPC_INVALID_PARAMS, why, NULL));
                        return;
                }
                s->version = mcp_negotiate(json_string_value(json_object_get(m->params, "protocolVersion")));
                log_info("client %s %s, protocol %s (asked for %s)",
                         json_string_value(json_object_get(json_object_get(m->params, "clientInfo"), "name")),
                         json_string_value(json_object_get(json_object_get(m->params, "clientInfo"), "version")),
                         s->version->name, json_string_value(json_object_get(m->params, "protocolVersion")));
                respond(s, b, rpc_result(m->id, initialize_result(s)));
                return;
        }
        if (!known) {
                respond(s, b,
                        rpc_error(m->id, RPC_METHOD_NOT_FOUND, "method not found",
                                  json_pack("{s:s}", "method", m->method)));
                return;
        }
        if (!s->version) {
                respond(s, b,
                        rpc_error(m->id, RPC_INVALID_REQUEST,
                                  "the server is not initialized: the first request must be initialize", NULL));
                return;
        }
        if ((why = check_meta(m->params, &token))) {
                respond(s, b, rpc_error(m->id, RPC_INVALID_PARAMS, why, NULL));
                return;
        }
        if (strcmp(m->method, "tools/list") == 0) {
                v = json_object_get(m->params, "cursor");
                if (v && !json_is_string(v)) {
                        respond(s, b, rpc_error(m->id, RPC_INVALID_PARAMS, "params.cursor must be a string", NULL));
                        return;
                }
                if (v) { /* one page: no cursor of ours exists */
                        respond(s, b, rpc_error(m->id, RPC_INVALID_PARAMS, "unknown cursor", NULL));
                        return;
                }
        } else {
                v = json_object_get(m->params, "name");
                if (!json_is_string(v)) {
                        respond(s, b, rpc_error(m->id, RPC_INVALID_PARAMS, "params.name must be a string", NULL));
                        return;
                }
                if (!tools_known(json_string_value(v))) {
                        respond(s, b,
                                rpc_error(m->id, RPC_INVALID_PARAMS, "unknown tool", json_pack("{s:O}", "name", v)));
                        return;
                }
                v = json_object_get(m->params, "arguments");
                if (v && !json_is_object(v)) {
                        respond(s, b, rpc_error(m->id, RPC_INVALID_PARAMS, "params.arguments must be an object", NULL));
                        return;
                }
        }
        if (find_request(s, m->id)) {
                respond(s, b,
                        rpc_error(m->id, RPC_INVALID_REQUEST, "the id is that of a request still in progress", NULL));
                return;
        }
        req = calloc(1, sizeof(*req));
        if (!req) {
                respond(s, b, rpc_error(m->id, RPC_INTERNAL_ERROR, "out of memory", NULL));
                return;
        }
        req->msg = json_incref(msg);
        req->id = m->id;
        req->method = m->method;
        req->params = m->params;
        req->progress_token = token;
        req->batch = b;
        if (b)
                b->refs++;
        enqueue(s, req);
}

static void handle_message(struct server *s, json_t *msg, struct batch *b) {
        struct rpc_message m;
        const char *why;
        int code;

        switch (rpc_classify(msg, &m, &code, &why)) {
        case RPC_BAD:
                respond(s, b, rpc_error(m.id, code, why, NULL));
                return;
        case RPC_RESPONSE:
                return; /* we send no requests: nothing waits for it */
        case RPC_NOTIFICATION:
                if (strcmp(m.method, "notifications/initialized") == 0)
                        s->initialized = s->version != NULL;
                else if (strcmp(m.method, "notifications/cancelled") == 0)
                        handle_cancelled(s, m.params);
                /* Others (roots/list_changed, ...) concern capabilities we
                 * do not use; a notification never gets an error. */
                return;
        case RPC_REQUEST:
                handle_request(s, msg, &m, b);
                return;
        }
}

static void handle_line(struct server *s, const char *line, size_t len) {
        _cleanup_json_ json_t *msg = NULL;
        json_error_t jerr;
        struct batch *b;
        size_t i;

        while (len > 0 && (line[0] == ' ' || line[0] == '\t'))
                line++, len--;
        if (len == 0)
                return; /* a blank line is no message */
        /* jansson refuses invalid UTF-8 and NUL, and (with this flag) the
         * duplicate keys that would make a message mean two things. */
        msg = json_loadb(line, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
        if (!msg) {
                respond(s, NULL,
                        rpc_error(NULL, RPC_PARSE_ERROR, "parse error: the line is not JSON",
                                  json_pack("{s:s, s:i}", "error", jerr.text, "position", jerr.position)));
                return;
        }
        if (!json_is_array(msg)) {
                handle_message(s, msg, NULL);
                return;
        }
        if (!s->version || !(s->version->features & MCP_F_BATCH)) {
                respond(s, NULL,
                        rpc_error(NULL, RPC_INVALID_REQUEST,
                                  s->version ? "JSON-RPC batches are not part of this protocol version"
                                             : "JSON-RPC batches are not accepted before initialize",
                                  NULL));
                return;
        }
        if (json_array_size(msg) == 0) {
                respond(s, NULL, rpc_error(NULL, RPC_INVALID_REQUEST, "an empty batch", NULL));
                return;
        }
        b = calloc(1, sizeof(*b));
        if (!b || !(b->responses = json_array())) {
                free(b);
                respond(s, NULL, rpc_error(NULL, RPC_INTERNAL_ERROR, "out of memory", NULL));
                return;
        }
        b->refs = 1;
        for (i = 0; i < json_array_size(msg); i++)
                handle_message(s, json_array_get(msg, i), b);
        batch_unref(s, b);
}

/* Serve queued requests, in order, until one of them starts a run. */
static void pump(struct server *s) {
        while (!s->current && s->queue_head && !s->stopping) {
                struct request *req;

                /* tools/call needs the session, tools/list the mount (and,
                 * for a named session, which may have tools of its own, the
                 * session): wait while they come up. */
                req = s->queue_head;
                if (s->setup == SETUP_MOUNTING)
                        return;
                if (s->setup == SETUP_OPENING && (strcmp(req->method, "tools/list") != 0 || s->cfg.session))
                        return;
                s->queue_head = req->next;
                if (!s->queue_head)
                        s->queue_tail = NULL;
                req->next = NULL;
                if (strcmp(req->method, "tools/list") == 0) {
                        server_reply_result(s, req, tools_list(s));
                        continue;
                }
                if (tools_call(s, req)) {
                        long long t = now_ms();
                        s->current = req;
                        s->run_started_ms = t;
                        s->run_watchdog_stage = 0;
                        s->run_watchdog_ms =
                                s->rs->timeout_s > 0
                                        ? t + (long long)((s->rs->timeout_s + s->grace_s) * 1000) + WATCHDOG_SLACK_MS
                                        : 0;
                        s->next_progress_ms = t + PROGRESS_INTERVAL_MS;
                        s->progress_bytes = 0;
                        s->progress_partial_len = 0;
                }
        }
}

/* ---- the run under way ------------------------------------------------------ */

static void send_progress(struct server *s, const char *text, size_t len) {
        struct request *req = s->current;
        json_t *params;

        s->progress_bytes += (double)len;
        params = json_pack("{s:O, s:f}", "progressToken", req->progress_token, "progress", s->progress_bytes);
        if (params && (s->version->features & MCP_F_PROGRESS_MESSAGE)) {
                json_t *msg = json_stringn(text, len);
                if (msg)
                        json_object_set_new(params, "message", msg);
        }
        server_notify(s, rpc_notification("notifications/progress", params));
}

/* Send the console lines the run printed since the last look. */
static void progress_tick(struct server *s) {
        char buf[PROGRESS_CHUNK];
        size_t n, start = 0, last_nl;
        char *joined;

        if (rsession_console(s->rs, buf, sizeof(buf), &n) < 0 || n == 0)
                return;
        joined = realloc(s->progress_partial, s->progress_partial_len + n);
        if (!joined)
                return;
        s->progress_partial = joined;
        memcpy(joined + s->progress_partial_len, buf, n);
        n += s->progress_partial_len;
        s->progress_partial_len = 0;
        /* Whole lines only, so that a notification never splits a line (or
         * a UTF-8 character); a very long unfinished line goes out cut. */
        for (last_nl = n; last_nl > 0 && joined[last_nl - 1] != '\n'; last_nl--)
                ;
        if (last_nl == 0 && n > PROGRESS_PARTIAL_MAX)
                last_nl = utf8_cut(joined, n, PROGRESS_PARTIAL_MAX);
        if (last_nl > 0 && out_queue_pending(&s->out) < OUT_PROGRESS_MAX)
                send_progress(s, joined + start, last_nl);
        memmove(joined, joined + last_nl, n - last_nl);
        s->progress_partial_len = n - last_nl;
}

static void run_ended(struct server *s, json_t *result, const char *err) {
        struct request *req = s->current;

        s->current = NULL;
        s->progress_partial_len = 0;
        if (req->cancelled)
                log_info("the cancelled run ended (%s)",
                         result ? json_string_value(json_object_get(result, "status")) : err);
        tools_run_ended(s, req, result, err);
}

static void run_readable(struct server *s) {
        json_t *result = NULL;
        char err[256];
        int r = rsession_run_finish(s->rs, &result);

        if (r == -EAGAIN)
                return;
        if (r < 0) {
                snprintf(err, sizeof(err), "the run's result could not be read from the mount: %s",
                         r == -EPROTO ? "not a result object" : strerror(-r));
                run_ended(s, NULL, err);
                return;
        }
        run_ended(s, result, NULL);
}

static void run_watchdog(struct server *s) {
        if (s->run_watchdog_stage == 0) {
                log_warn("the run has gone %lld ms past its deadline; interrupting it", (long long)WATCHDOG_SLACK_MS);
                rsession_interrupt(s->rs);
                s->run_watchdog_stage = 1;
                s->run_watchdog_ms = now_ms() + WATCHDOG_SLACK_MS;
                return;
        }
        run_ended(s, NULL,
                  "the mount did not end the run within its timeout and grace period; "
                  "the session may still be busy (try restart_session)");
}

/* ---- the loop --------------------------------------------------------------- */

/* Take n bytes of input (n == 0: end of input) and handle every complete
 * line in them. */
static void feed_input(struct server *s, const char *buf, size_t n) {
        const char *line;
        size_t len;
        enum line_kind k;

        if (n == 0)
                s->in_eof = true;
        else if (line_reader_feed(&s->in, buf, n) < 0) {
                log_error("out of memory reading stdin");
                s->in_eof = true;
        }
        while ((k = line_reader_next(&s->in, s->in_eof, &line, &len)) != LINE_NONE) {
                if (k == LINE_TOO_LONG)
                        respond(s, NULL,
                                rpc_error(NULL, RPC_INVALID_REQUEST, "the message is longer than this server accepts",
                                          json_pack("{s:I, s:I}", "bytes", (json_int_t)len, "limit",
                                                    (json_int_t)s->in.max)));
                else
                        handle_line(s, line, len);
        }
}

static void read_stdin(struct server *s) {
        char buf[65536];
        ssize_t n = read(0, buf, sizeof(buf));

        if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                        return;
                log_error("reading stdin: %s", strerror(errno));
                n = 0;
        }
        feed_input(s, buf, (size_t)n);
}

static void handle_signals(struct server *s) {
        struct signalfd_siginfo si;

        while (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGCHLD) {
                        int status;
                        if (s->pm && s->pm->pid && waitpid(s->pm->pid, &status, WNOHANG) == s->pm->pid) {
                                private_mount_exited(s->pm, status);
                                if (!s->stopping)
                                        log_error("the private securerfs exited (status %d)", status);
                        }
                        continue;
                }
                log_info("signal %d: ending", (int)si.ssi_signo);
                s->stopping = true;
                s->exit_status = 128 + (int)si.ssi_signo;
        }
}

static long long next_deadline(const struct server *s) {
        long long d = LLONG_MAX;

        if (s->setup == SETUP_MOUNTING)
                d = now_ms() + MOUNT_CHECK_MS;
        if (s->setup == SETUP_OPENING)
                d = MIN(d, s->setup_deadline_ms);
        if (s->current && s->current->progress_token && !s->current->cancelled)
                d = MIN(d, s->next_progress_ms);
        if (s->current && s->run_watchdog_ms)
                d = MIN(d, s->run_watchdog_ms);
        return d;
}

static void on_timers(struct server *s) {
        long long t = now_ms();

        if (s->setup == SETUP_MOUNTING)
                setup_check_mount(s);
        if (s->setup == SETUP_OPENING && t > s->setup_deadline_ms)
                setup_failed(s, "the session did not open within %d s", SETUP_TIMEOUT_MS / 1000);
        if (s->current && s->current->progress_token && !s->current->cancelled && t >= s->next_progress_ms) {
                progress_tick(s);
                s->next_progress_ms = t + PROGRESS_INTERVAL_MS;
        }
        if (s->current && s->run_watchdog_ms && t >= s->run_watchdog_ms)
                run_watchdog(s);
}

enum { P_SIGNAL, P_STDIN, P_STDOUT, P_LOG, P_OPENER, P_RUN, P_COUNT };

static void flush_stdout(struct server *s) {
        int r = out_queue_flush(&s->out, 1);

        if (r < 0) {
                /* The client is gone (EPIPE): nobody reads our answers. */
                if (!s->stopping)
                        log_info("stdout: %s: ending", strerror(-r));
                s->stopping = true;
                s->out.len = 0;
        }
}

static void serve(struct server *s) {
        while (!s->stopping) {
                struct pollfd p[P_COUNT];
                long long d;
                int timeout, n;

                for (int i = 0; i < P_COUNT; i++)
                        p[i] = (struct pollfd){.fd = -1};
                p[P_SIGNAL] = (struct pollfd){.fd = s->signal_fd, .events = POLLIN};
                if (!s->in_eof && out_queue_pending(&s->out) < OUT_BACKLOG_MAX)
                        p[P_STDIN] = (struct pollfd){.fd = 0, .events = POLLIN};
                if (out_queue_pending(&s->out))
                        p[P_STDOUT] = (struct pollfd){.fd = 1, .events = POLLOUT};
                if (s->pm && s->pm->log_fd >= 0)
                        p[P_LOG] = (struct pollfd){.fd = s->pm->log_fd, .events = POLLIN};
                if (s->opener_started && !s->opener_done)
                        p[P_OPENER] = (struct pollfd){.fd = s->opener_pipe[0], .events = POLLIN};
                if (s->current)
                        p[P_RUN] = (struct pollfd){.fd = rsession_run_fd(s->rs), .events = POLLIN};
                d = next_deadline(s);
                timeout = d == LLONG_MAX ? -1 : (int)MAX(0, MIN(d - now_ms(), 60000));
                n = poll(p, P_COUNT, timeout);
                if (n < 0 && errno != EINTR) {
                        log_error("poll: %s", strerror(errno));
                        s->stopping = true;
                        s->exit_status = 1;
                        break;
                }
                if (n > 0) {
                        if (p[P_SIGNAL].revents)
                                handle_signals(s);
                        if (p[P_LOG].revents)
                                private_mount_read_log(s->pm);
                        if (p[P_OPENER].revents)
                                opener_finished(s);
                        if (p[P_RUN].revents && s->current)
                                run_readable(s);
                        if (p[P_STDIN].revents)
                                read_stdin(s);
                }
                on_timers(s);
                pump(s);
                if (out_queue_pending(&s->out))
                        flush_stdout(s);
                if (s->in_eof) {
                        /* MCP's stdio shutdown: the client closes our stdin
                         * and waits for us to exit. */
                        log_info("stdin closed: ending");
                        s->stopping = true;
                }
        }
}

/* Wait up to ms for the opener thread, reading the daemon's log meanwhile. */
static void wait_opener(struct server *s, int ms) {
        long long until = now_ms() + ms;

        while (s->opener_started && !s->opener_done && now_ms() < until) {
                struct pollfd p = {.fd = s->opener_pipe[0], .events = POLLIN};
                if (poll(&p, 1, 50) > 0)
                        opener_finished(s);
                else if (s->pm)
                        private_mount_read_log(s->pm);
        }
}

static void shutdown_server(struct server *s) {
        long long until;

        /* A run of ours under way: nobody will read its result.  A named
         * session outlives us, so end the run there; our own session goes
         * with the rmdir below. */
        if (s->current && s->rs && !s->rs->owned)
                rsession_interrupt(s->rs);
        while (s->queue_head) {
                struct request *r = s->queue_head;
                s->queue_head = r->next;
                request_free(s, r);
        }
        if (s->current) {
                request_free(s, s->current);
                s->current = NULL;
        }
        /* Answers already made: give the client a moment to take them. */
        for (until = now_ms() + 1000; out_queue_pending(&s->out) && now_ms() < until;) {
                struct pollfd p = {.fd = 1, .events = POLLOUT};
                if (poll(&p, 1, 50) > 0 && out_queue_flush(&s->out, 1) < 0)
                        break;
        }
        if (s->opener_started && !s->opener_done) {
                /* A session being made on a shared mount would be left behind:
                 * wait for it, to close it.  A private mount ends anyway. */
                s->setup = SETUP_FAILED;
                if (!s->pm)
                        wait_opener(s, 10000);
        }
        if (s->rs) {
                log_info("closing session %s%s", s->rs->name, s->rs->owned ? "" : " (named: kept)");
                rsession_close(s->rs);
                s->rs = NULL;
        }
        if (s->pm) {
                private_mount_stop(s->pm, 5000);
                s->pm = NULL;
        }
}

int server_run(const struct server_config *cfg) {
        /* On the heap: a thread opening the session may outlive the loop
         * (a private mount being stopped under it), and must find the
         * server still there until the process exits. */
        struct server *s = calloc(1, sizeof(*s));
        sigset_t mask;
        struct stat st;
        int out_flags = -1, status;

        if (!s)
                return 1;
        s->cfg = *cfg;
        s->opener_pipe[0] = s->opener_pipe[1] = -1;
        s->signal_fd = -1;
        line_reader_init(&s->in, MCP_LINE_MAX);
        /* Signals come through signalfd, in the loop; blocked before any
         * thread starts, so that every thread has them blocked. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN); /* a closed stdout is EPIPE, handled */
        s->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (s->signal_fd < 0) {
                log_error("signalfd: %s", strerror(errno));
                free(s);
                return 1;
        }
        /* stdout must not block the loop when the client is slow to read:
         * non-blocking if it is a pipe or socket (as MCP clients give),
         * restored at the end.  stdin is read only after poll says so. */
        if (fstat(1, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
                out_flags = fcntl(1, F_GETFL);
                if (out_flags >= 0)
                        fcntl(1, F_SETFL, out_flags | O_NONBLOCK);
        }
        setup_begin(s);
        serve(s);
        shutdown_server(s);
        if (out_flags >= 0)
                fcntl(1, F_SETFL, out_flags);
        status = s->exit_status;
        if (s->opener_started && !s->opener_done)
                return status; /* the thread still uses s: the process exit ends both */
        closep(&s->opener_pipe[0]);
        closep(&s->opener_pipe[1]);
        free(s->progress_partial);
        free(s->mount);
        line_reader_free(&s->in);
        out_queue_free(&s->out);
        close(s->signal_fd);
        free(s);
        return status;
}

/* ---- without a mount, for tests and fuzzing ------------------------------------ */

struct server *server_new_detached(size_t max_line) {
        struct server *s = calloc(1, sizeof(*s));

        if (!s)
                return NULL;
        s->opener_pipe[0] = s->opener_pipe[1] = -1;
        s->signal_fd = -1;
        line_reader_init(&s->in, max_line);
        s->setup = SETUP_FAILED;
        snprintf(s->setup_error, sizeof(s->setup_error), "detached: no mount");
        return s;
}

void server_feed(struct server *s, const char *data, size_t len) {
        feed_input(s, data, len);
        pump(s);
}

void server_free_detached(struct server *s) {
        if (!s)
                return;
        while (s->queue_head) {
                struct request *r = s->queue_head;
                s->queue_head = r->next;
                request_free(s, r);
        }
        line_reader_free(&s->in);
        out_queue_free(&s->out);
        free(s);
}
