/* The stats file: the daemon's counters (struct session_stats, counted where
 * things happen), what is running, the pool, the helpers' restarts and why
 * the last worker could not start. */
#include "session_private.h"

#include <math.h>

#include "loop.h"
#include "sandbox/spawner.h"
#include "workspace.h"

json_t *sessions_stats(struct sessions *t) {
        const struct session_stats *c = &t->stats;
        unsigned running = t->n_running;
        long long workspace_bytes = workspaces_usage(t->workspaces);
        json_t *j;

        /* Counters only: reading stats costs the same with 5 sessions as
         * with 5,000. */
        j = json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:f}", "sessions",
                      (int)t->n_sessions, "running", (int)running, "sessions_created", (json_int_t)c->sessions_created,
                      "executions", (json_int_t)c->executions, "errors", (json_int_t)c->errors, "timeouts",
                      (json_int_t)c->timeouts, "crashes", (json_int_t)c->crashes, "killed", (json_int_t)c->killed,
                      "interrupts", (json_int_t)c->interrupts, "restarts", (json_int_t)c->restarts, "tool_calls",
                      (json_int_t)c->tool_calls, "pool_idle", (int)t->pool_ready, "uptime",
                      round((double)(now_ns() - t->start_ns) / 1e6) / 1e3);
        if (!j)
                return NULL;
        /* A user whose mkdir got EPERM can read why here. */
        if (t->last_start_error[0])
                json_object_set_new(j, "last_start_error", json_string(t->last_start_error));
        json_object_set_new(j, "workspace_bytes", json_integer(workspace_bytes));
        json_object_set_new(j, "keeper_restarts", json_integer((json_int_t)workspaces_keeper_restarts(t->workspaces)));
        json_object_set_new(j, "zygote_restarts", json_integer((json_int_t)spawner_restarts(t->spawner)));
        json_object_set_new(j, "protocol_violations", json_integer((json_int_t)c->protocol_violations));
        return j;
}
