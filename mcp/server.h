/* securerfs-mcp's server: the MCP protocol on stdin/stdout, one event loop
 * (poll(2)), and the session it serves.
 *
 * The loop's life:
 *
 *   start    the mount: the one given (--mount, SECURERFS_MOUNT), or a
 *            private securerfs started at once in the background; then
 *            the session, opened on a thread of its own because the daemon
 *            answers mkdir and clone only when the session's worker is
 *            ready.  Meanwhile stdin is read: initialize and ping are
 *            answered, other requests wait in the queue.
 *   serve    one request of the queue at a time, in arrival order.  Most
 *            are answered at once; execute_r_code starts a run and becomes
 *            the current request until its result.json is readable (poll),
 *            while the loop goes on answering ping, taking cancellations
 *            (ctl interrupt; no response, as the specification says), and
 *            sending the console as progress.
 *   end      stdin at end of file, SIGTERM, SIGINT, SIGHUP, or stdout
 *            gone: the run under way is interrupted, the session closed
 *            (unless it is a named one), the private mount stopped; every
 *            wait has a deadline.
 *
 * Requests never wait on each other except through the queue, and nothing
 * the loop does waits on the mount longer than a plain file operation
 * takes the daemon to answer. */
#pragma once

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

#include "jsonrpc.h"
#include "mount.h"
#include "rsession.h"

/* The longest line read from stdin; longer ones are answered with an error
 * and dropped without being kept. */
#define MCP_LINE_MAX (16u << 20)

struct server_config {
        const char *mount;          /* a running mount, or NULL: a private one */
        const char *session;        /* a named session, or NULL: a new one, closed at the end */
        double timeout_s;           /* seconds per run, or < 0: the mount's default */
        const char *daemon_options; /* more -o options for a private mount, or NULL */
};

/* Features by protocol revision (modelcontextprotocol.io/specification). */
enum {
        MCP_F_BATCH = 1 << 0,                 /* 2025-03-26 only: receiving JSON-RPC batches is a MUST */
        MCP_F_ANNOTATIONS = 1 << 1,           /* tool annotations, from 2025-03-26 */
        MCP_F_PROGRESS_MESSAGE = 1 << 2,      /* notifications/progress "message", from 2025-03-26 */
        MCP_F_STRUCTURED = 1 << 3,            /* outputSchema, structuredContent, title: from 2025-06-18 */
        MCP_F_ARG_ERRORS_AS_RESULTS = 1 << 4, /* bad tool arguments are tool errors: 2025-11-25 (SEP-1303) */
};

struct mcp_version {
        const char *name;
        unsigned features;
};

/* The revisions served, oldest first; the last is the latest. */
extern const struct mcp_version mcp_versions[];
extern const unsigned mcp_n_versions;

/* The revision answered to a client that asks for name: the same when it
 * is served, else the latest. */
const struct mcp_version *mcp_negotiate(const char *name);

struct batch;

/* A request that was accepted: queued, or the one being served. */
struct request {
        json_t *msg; /* the whole message (owns what follows) */
        json_t *id;
        const char *method;
        json_t *params;         /* an object, or NULL */
        json_t *progress_token; /* params._meta.progressToken, or NULL */
        struct batch *batch;    /* the batch it came in, or NULL */
        struct request *next;
        bool cancelled;
};

enum setup_state { SETUP_MOUNTING, SETUP_OPENING, SETUP_READY, SETUP_FAILED };

struct server {
        struct server_config cfg;

        /* the protocol */
        const struct mcp_version *version; /* NULL until initialize */
        bool initialized;                  /* notifications/initialized came */
        struct line_reader in;
        struct out_queue out;
        bool in_eof;
        struct request *queue_head, *queue_tail;
        struct request *current; /* being served: its run is under way */

        /* the mount and the session */
        char *mount;              /* the mount in use */
        struct private_mount *pm; /* when it is ours */
        enum setup_state setup;
        char setup_error[1536];
        long long start_ms;
        long long setup_deadline_ms;
        struct rsession *rs;
        long long files_max_bytes; /* from the mount's config, for messages; 0: unknown */
        double grace_s;            /* the mount's grace period */
        double mount_timeout_s;    /* the mount's default seconds per run */
        /* The thread that opens the session (rsession_open blocks). */
        pthread_t opener;
        bool opener_started, opener_done;
        int opener_pipe[2];
        struct rsession *opened;
        int opened_err;
        char opened_msg[1024];

        /* the run under way (current is an execute_r_code) */
        long long run_started_ms;
        long long run_watchdog_ms; /* 0: none */
        int run_watchdog_stage;    /* 0, 1: interrupted by the watchdog */
        long long next_progress_ms;
        double progress_bytes;  /* console bytes sent as progress */
        char *progress_partial; /* console after the last newline, not sent yet */
        size_t progress_partial_len;

        /* the end */
        int signal_fd;
        bool stopping;
        int exit_status;
};

/* Run the server until its input ends or a signal stops it.  Returns the
 * process's exit status. */
int server_run(const struct server_config *cfg);

/* A server with no mount and no session (every tool call answers that it
 * has none), for unit tests and the fuzz target: server_feed() hands it
 * bytes as if read from stdin (len 0: end of input) and serves what it
 * can; its answers collect in s->out. */
struct server *server_new_detached(size_t max_line);
void server_feed(struct server *s, const char *data, size_t len);
void server_free_detached(struct server *s);

/* Monotonic milliseconds. */
long long now_ms(void);

/* ---- what mcp/tools.c uses ------------------------------------------------ */

/* Answer req with result (stolen) or with an error; frees req. */
void server_reply_result(struct server *s, struct request *req, json_t *result);
void server_reply_error(struct server *s, struct request *req, int code, const char *message);

/* Send a notification (stolen) now. */
void server_notify(struct server *s, json_t *notification);
