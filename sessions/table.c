/* The session table: the daemon's sessions and what they share — the zygote
 * (sandbox/spawner.h), the workspaces and their keeper
 * (sessions/workspace.h), the cgroups, the host id range, the tool registry,
 * the audit log — and the lookups fs/ makes. */
#include "persist.h"
#include "session_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit.h"
#include "config.h"
#include "hostids.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "sandbox/cgroup.h"
#include "sandbox/spawner.h"
#include "tools.h"
#include "worker.h"
#include "workspace.h"

bool session_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n == 0 || n > 64 || name[0] == '.')
                return false;
        return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

struct session *sessions_find(struct sessions *t, const char *name) {
        struct session *s;

        list_for_each(s, tmp, &t->sessions, struct session, link) if (strcmp(s->name, name) == 0) return s;
        return NULL;
}

struct session *sessions_find_id(struct sessions *t, uint64_t id) {
        struct session *s;

        list_for_each(s, tmp, &t->sessions, struct session, link) if (s->id == id) return s;
        return NULL;
}

struct session *sessions_next(struct sessions *t, uint64_t after) {
        struct session *s;

        list_for_each(s, tmp, &t->sessions, struct session, link) if (s->id > after) return s;
        return NULL;
}

struct tools *sessions_tools(struct sessions *t) { return t->tools; }

int sessions_open_audit(struct sessions *t, const char *path) { return audit_open(path, &t->audit); }

/* The worker program: -o worker=PATH, else next to this program (a build
 * tree), else the installed libexec one. */
static void locate_worker(const struct options *o, char *path, size_t size) {
        ssize_t n;

        if (o->worker_path) {
                snprintf(path, size, "%s", o->worker_path);
                return;
        }
        n = readlink("/proc/self/exe", path, size - 32);
        if (n > 0) {
                path[n] = '\0';
                strcpy(strrchr(path, '/') + 1, "securerfs-worker");
        }
        if (n <= 0 || access(path, X_OK) != 0)
                snprintf(path, size, "%s/securerfs-worker", SECURERFS_LIBEXECDIR);
}

/* Free a table sessions_new() made in part (every pointer may be NULL). */
static void sessions_undo(struct sessions *t) {
        tools_free(t->tools);
        pool_free(t);
        cgroup_tree_free(t->cgroups);
        workspaces_free(t->workspaces);
        id_pool_free(t->ids);
        free(t);
}

int sessions_new(struct loop *l, const struct options *o, const struct session_events *ev, struct sessions **out) {
        struct sessions *t = calloc(1, sizeof(*t));
        struct spawner_config sc = {.sandbox_none = o->sandbox_none, .r_libs = o->r_libs, .tmp_bytes = o->tmp_bytes,
                                    .allow_exec = o->allow_exec};
        const char *why;
        static char worker_path[4096];
        int e;

        if (!t)
                return -ENOMEM;
        t->loop = l;
        t->opt = o;
        t->ev = *ev;
        t->start_ns = now_ns();
        list_init(&t->sessions);
        list_init(&t->workers);
        list_init(&t->pool);
        locate_worker(o, worker_path, sizeof(worker_path));
        sc.worker_path = worker_path;
        /* A root daemon's jailed workers each get a host id of the range
         * (main() checked it against the host's ids); unprivileged, there
         * is only the daemon's own. */
        if (geteuid() == 0 && !o->sandbox_none && id_pool_new(&o->id_range, &t->ids) < 0) {
                sessions_undo(t);
                return -ENOMEM;
        }
        if (cgroup_tree_new(&t->cgroups, &why) < 0) {
                sessions_undo(t);
                return -ENOMEM;
        }
        if (why)
                log_info("no per-worker cgroup (rlimits only): %s", why);
        /* Without workspaces no session can start; the daemon still runs and
         * says why (the log, stats' last_start_error), as for a jail that
         * cannot be built. */
        if (workspaces_new(l, !o->sandbox_none, o->files_max_bytes, &t->workspaces, t->workspaces_error,
                           sizeof(t->workspaces_error)) < 0) {
                log_error("no workspaces, so no sessions: %s", t->workspaces_error);
                snprintf(t->last_start_error, sizeof(t->last_start_error), "%s", t->workspaces_error);
                t->workspaces = NULL;
        }
        sc.cgroup_dirs = cgroup_tree_dirs(t->cgroups);
        if ((e = pool_init(t)) < 0 || (e = tools_new(l, o, &t->tools)) < 0 || (e = spawner_new(l, &sc, &t->spawner)) < 0) {
                sessions_undo(t);
                return e;
        }
        pool_fill(t);
        *out = t;
        return 0;
}

void sessions_free(struct sessions *t) {
        struct worker *w;

        if (!t)
                return;
        /* Only the closing event still goes out: it lets the fs layer answer
         * parked requests and free what it keeps per session. */
        t->ev.created = NULL;
        t->ev.run_ended = NULL;
        while (!list_empty(&t->sessions))
                session_close(list_first(&t->sessions, struct session, link));
        /* Global tool servers end with the daemon. */
        tools_free(t->tools);
        t->tools = NULL;
        list_for_each(w, tmp, &t->workers, struct worker, link) {
                w->session = NULL;
                worker_kill(w, "shutdown");
        }
        spawner_free(t->spawner);
        /* Reap what we killed, so that no worker outlives the daemon. */
        list_for_each(w, tmp, &t->workers, struct worker, link) {
                if (w->pid > 0 && !w->exited && waitpid(w->pid, NULL, 0) == w->pid)
                        w->exited = true;
        }
        while (!list_empty(&t->workers))
                worker_free(list_first(&t->workers, struct worker, link));
        cgroup_tree_free(t->cgroups);
        workspaces_free(t->workspaces);
        pool_free(t);
        audit_close(t->audit);
        id_pool_free(t->ids);
        persist_free(t);
        free(t);
}
