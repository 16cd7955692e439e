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

#include "array.h"
#include "audit.h"
#include "config.h"
#include "hostids.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "snapshot.h"
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
        uint64_t h = hash_str(name);
        struct session *s;

        HASH_FOR_EACH(s, &t->by_name, h, struct session, by_name) {
                if (strcmp(s->name, name) == 0)
                        return s;
        }
        return NULL;
}

struct session *sessions_find_id(struct sessions *t, uint64_t id) {
        uint64_t h = hash_u64(id);
        struct session *s;

        HASH_FOR_EACH(s, &t->by_id, h, struct session, by_id) {
                if (s->id == id)
                        return s;
        }
        return NULL;
}

/* The first slot whose id is > after (binary search: ids ascend). */
static size_t order_after(const struct sessions *t, uint64_t after) {
        size_t lo = 0, hi = t->n_order;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (t->order[mid].id <= after)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

struct session *sessions_next(struct sessions *t, uint64_t after) {
        /* Holes are at most as many as the sessions (the array is packed
         * then), so skipping them costs no more than the listing. */
        for (size_t i = order_after(t, after); i < t->n_order; i++)
                if (t->order[i].s)
                        return t->order[i].s;
        return NULL;
}

int sessions_index_add(struct sessions *t, struct session *s) {
        if (t->n_order == t->order_cap) {
                struct session_slot *o = array_grow(t->order, &t->order_cap, sizeof(*o), 64);

                if (!o)
                        return -ENOMEM;
                t->order = o;
        }
        if (hash_insert(&t->by_id, &s->by_id, hash_u64(s->id)) < 0)
                return -ENOMEM;
        if (hash_insert(&t->by_name, &s->by_name, hash_str(s->name)) < 0) {
                hash_remove(&t->by_id, &s->by_id);
                return -ENOMEM;
        }
        t->order[t->n_order++] = (struct session_slot){.id = s->id, .s = s};
        return 0;
}

void sessions_index_remove(struct sessions *t, struct session *s) {
        size_t i = order_after(t, s->id - 1), k = 0;

        hash_remove(&t->by_id, &s->by_id);
        hash_remove(&t->by_name, &s->by_name);
        if (i < t->n_order && t->order[i].s == s) {
                t->order[i].s = NULL;
                t->order_holes++;
        }
        if (t->order_holes <= t->n_order / 2)
                return;
        for (i = 0; i < t->n_order; i++)
                if (t->order[i].s)
                        t->order[k++] = t->order[i];
        t->n_order = k;
        t->order_holes = 0;
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
        loop_timer_free(t->trim);
        loop_timer_free(t->cgroup_sweep);
        hash_free(&t->by_id);
        hash_free(&t->by_name);
        free(t->order);
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
        list_init(&t->xfers);
        list_init(&t->state_all);
        if (!(t->trim = loop_timer_new(l, worker_on_trim, t)) ||
            !(t->cgroup_sweep = loop_timer_new(l, worker_on_cgroup_sweep, t))) {
                sessions_undo(t);
                return -ENOMEM;
        }
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
        /* Every worker is dead: the transfers and the copies' threads still
         * under way end now (no thread outlives the files it writes). */
        snapshot_sessions_stop(t);
        cgroup_tree_free(t->cgroups);
        workspaces_free(t->workspaces);
        pool_free(t);
        audit_close(t->audit);
        id_pool_free(t->ids);
        hash_free(&t->by_id);
        hash_free(&t->by_name);
        free(t->order);
        persist_free(t);
        loop_timer_free(t->trim);
        loop_timer_free(t->cgroup_sweep);
        free(t);
}
