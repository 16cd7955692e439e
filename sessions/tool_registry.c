/* The tool registry (sessions/tools.h): scopes and their entries (the
 * tools/ directories' files), the .errors files, and the definitions each
 * session's worker has. */
#include "tools_private.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "json_cleanup.h"
#include "log.h"
#include "macros.h"
#include "protocol.h"
#include "utf8.h"

/* .errors keeps this many lines. */
#define ERRORS_KEPT 100u

json_t *tool_json_string_clean(const char *s) {
        size_t len;
        char *clean = utf8_sanitize_dup(s, strlen(s), &len);
        json_t *j = clean ? json_stringn(clean, len) : NULL;

        free(clean);
        return j;
}

/* "sessions/NAME/" for a session scope's log lines, "" for the global one. */
static void scope_prefix(const struct tool_scope *sc, char *buf, size_t n) {
        if (sc->session_id)
                snprintf(buf, n, "sessions/%s/", sc->host.name(sc->host.data));
        else
                buf[0] = '\0';
}

/* ---- the .errors file -------------------------------------------------------- */

static void scope_record_error(struct tool_scope *sc, const char *filename, const char *error) {
        char prefix[80], *line;
        size_t len;

        scope_prefix(sc, prefix, sizeof(prefix));
        log_info("%stools/%s: refused: %s", prefix, filename, error);
        line = audit_format(json_pack("{s:o, s:o}", "tool", tool_json_string_clean(filename), "error",
                                      tool_json_string_clean(error)),
                            &len);
        if (!line)
                return;
        if (sc->n_errors == ERRORS_KEPT) {
                char *nl = memchr(sc->errors.data, '\n', sc->errors.len);
                text_consume(&sc->errors, nl ? (size_t)(nl + 1 - sc->errors.data) : sc->errors.len);
                sc->n_errors--;
        }
        text_append(&sc->errors, line, len);
        sc->n_errors++;
        free(line);
}

const struct text *tool_scope_errors(const struct tool_scope *sc) {
        static const struct text empty = {(char *)"", 0, 0};
        return sc->errors.data ? &sc->errors : &empty;
}

/* ---- scopes and entries ---------------------------------------------------------- */

static void scope_init(struct tool_scope *sc, struct tools *t, uint64_t session_id) {
        sc->owner = t;
        sc->session_id = session_id;
        list_init(&sc->entries);
        list_init(&sc->servers);
        list_init(&sc->link);
}

struct tool_scope *tools_global(struct tools *t) { return &t->global; }
uint64_t tool_scope_session_id(const struct tool_scope *sc) { return sc->session_id; }

int tools_scope_new(struct tools *t, uint64_t session_id, const struct tool_host *host, struct tool_scope **out) {
        struct tool_scope *sc = calloc(1, sizeof(*sc));

        if (!sc)
                return -ENOMEM;
        scope_init(sc, t, session_id);
        sc->host = *host;
        list_append(&t->scopes, &sc->link);
        *out = sc;
        return 0;
}

uint64_t tool_entry_id(const struct tool_entry *e) { return e->id; }
struct tool_scope *tool_entry_scope(const struct tool_entry *e) { return e->scope; }
const char *tool_entry_filename(const struct tool_entry *e) { return e->filename; }
bool tool_entry_unlinked(const struct tool_entry *e) { return e->unlinked; }

const struct text *tool_entry_text(const struct tool_entry *e) {
        static const struct text empty = {(char *)"", 0, 0};
        return e->text.data ? &e->text : &empty;
}

struct tool_entry *tools_entry_lookup(struct tool_scope *sc, const char *filename) {
        struct tool_entry *e;

        list_for_each(e, tmp, &sc->entries, struct tool_entry, link) {
                if (!e->unlinked && strcmp(e->filename, filename) == 0)
                        return e;
        }
        return NULL;
}

/* Constant time: an inode number of a tool file is decoded on every
 * request on it, whatever the number of sessions (scopes). */
struct tool_entry *tools_entry_by_id(struct tools *t, uint64_t id) {
        uint64_t h = hash_u64(id);
        struct tool_entry *e;

        HASH_FOR_EACH(e, &t->entries, h, struct tool_entry, by_id) {
                if (e->id == id)
                        return e;
        }
        return NULL;
}

struct tool_entry *tools_entry_next(struct tool_scope *sc, uint64_t after) {
        struct tool_entry *e;

        list_for_each(e, tmp, &sc->entries, struct tool_entry, link) {
                if (e->id > after && !e->unlinked)
                        return e;
        }
        return NULL;
}

struct tool_entry *tool_visible_entry(struct tool_scope *sc, const char *name) {
        struct tool_scope *scopes[2] = {sc, &sc->owner->global};
        struct tool_entry *e;

        for (int i = 0; i < 2; i++)
                list_for_each(e, tmp, &scopes[i]->entries, struct tool_entry, link) {
                        if (e->def && !e->unlinked && strcmp(e->name, name) == 0)
                                return e;
                }
        return NULL;
}

/* Definitions of sc changed: tell every session they reach. */
static void scope_changed(struct tool_scope *sc) {
        struct tool_scope *s;

        if (sc->session_id) {
                tool_scope_prune_servers(sc, sc);
                tool_scope_worker_sync(sc);
                return;
        }
        list_for_each(s, tmp, &sc->owner->scopes, struct tool_scope, link) {
                tool_scope_prune_servers(s, sc);
                tool_scope_worker_sync(s);
        }
}

static void entry_free(struct tool_entry *e) {
        hash_remove(&e->scope->owner->entries, &e->by_id);
        list_unlink(&e->link);
        tool_def_unref(e->def);
        text_free(&e->text);
        free(e->name);
        free(e->filename);
        free(e);
}

int tools_entry_create(struct tool_scope *sc, const char *filename, struct tool_entry **out) {
        const char *why;
        struct tool_entry *e;
        char *name;

        if (tools_entry_lookup(sc, filename))
                return -EEXIST;
        name = tool_filename_to_name(filename, &why);
        if (!name) {
                scope_record_error(sc, filename, why);
                return -EINVAL;
        }
        e = calloc(1, sizeof(*e));
        if (!e || asprintf(&e->filename, "%s.json", name) < 0) {
                free(e);
                free(name);
                return -ENOMEM;
        }
        e->name = name;
        e->id = ++sc->owner->next_entry_id;
        e->scope = sc;
        if (hash_insert(&sc->owner->entries, &e->by_id, hash_u64(e->id)) < 0) {
                free(e->filename);
                free(e->name);
                free(e);
                return -ENOMEM;
        }
        list_append(&sc->entries, &e->link);
        *out = e;
        return 0;
}

void tool_entry_hold(struct tool_entry *e) { e->holds++; }

void tool_entry_release(struct tool_entry *e) {
        if (e->holds > 0)
                e->holds--;
        if (e->holds == 0 && (e->unlinked || !e->def))
                entry_free(e);
}

int tool_entry_write(struct tool_entry *e, const char *text, size_t len) {
        struct tool_scope *sc = e->scope;
        struct tool_def *d;
        char err[512], prefix[80];
        int r;

        if (e->unlinked)
                return 0;
        r = tool_def_parse(e->name, text, len, sc->owner->home, ++sc->owner->next_gen, &d, err, sizeof(err));
        if (r < 0) {
                scope_record_error(sc, e->filename, err);
                return r;
        }
        tool_def_unref(e->def);
        e->def = d;
        text_set(&e->text, text, len);
        scope_prefix(sc, prefix, sizeof(prefix));
        log_info("%stools/%s: defined (%s, %zu argument%s)", prefix, e->filename, d->server ? "server" : "exec",
                 d->n_args, d->n_args == 1 ? "" : "s");
        scope_changed(sc);
        return 0;
}

static void entry_unlink(struct tool_entry *e) {
        bool had_def = e->def != NULL;
        struct tool_scope *sc = e->scope;

        e->unlinked = true;
        tool_def_unref(e->def);
        e->def = NULL;
        if (e->holds == 0)
                entry_free(e);
        if (had_def)
                scope_changed(sc);
}

int tools_entry_unlink(struct tool_scope *sc, const char *filename) {
        struct tool_entry *e = tools_entry_lookup(sc, filename);

        if (!e)
                return -ENOENT;
        entry_unlink(e);
        return 0;
}

int tools_entry_rename(struct tool_scope *sc, const char *from, const char *to, unsigned flags) {
        struct tool_entry *e = tools_entry_lookup(sc, from), *target = tools_entry_lookup(sc, to);
        const char *why;
        char *name, *filename;

        if (!e)
                return -ENOENT;
        if (e == target)
                return 0;
        if (target && (flags & RENAME_NOREPLACE))
                return -EEXIST;
        name = tool_filename_to_name(to, &why);
        if (!name) {
                scope_record_error(sc, to, why);
                return -EINVAL;
        }
        filename = strdup(to);
        if (!filename) {
                free(name);
                return -ENOMEM;
        }
        if (e->def) {
                /* Definitions are immutable and carry their name: the renamed
                 * file gets a copy under the new name (its text was
                 * accepted once: only memory can fail). */
                char err[512];
                struct tool_def *d;
                if (tool_def_parse(name, e->text.data, e->text.len, sc->owner->home, ++sc->owner->next_gen, &d, err,
                                   sizeof(err)) < 0) {
                        free(name);
                        free(filename);
                        return -ENOMEM;
                }
                tool_def_unref(e->def);
                e->def = d;
        }
        if (target)
                entry_unlink(target);
        free(e->name);
        free(e->filename);
        e->name = name;
        e->filename = filename;
        scope_changed(sc);
        return 0;
}

/* ---- definitions reaching workers ------------------------------------------------ */

static void installed_clear(struct tool_scope *sc) {
        for (size_t i = 0; i < sc->n_installed; i++)
                free(sc->installed[i].name);
        free(sc->installed);
        sc->installed = NULL;
        sc->n_installed = 0;
}

static void send_define(struct tool_scope *sc, const struct tool_def *d) {
        _cleanup_json_ json_t *m = protocol_define_tool(d->name, d->args_json, d->description);

        if (m)
                sc->host.send(sc->host.data, m);
}

static void send_remove(struct tool_scope *sc, const char *name) {
        _cleanup_json_ json_t *m = protocol_remove_tool(name);

        if (m)
                sc->host.send(sc->host.data, m);
}

/* Is name among what the worker has? */
static bool installed_has(const struct tool_scope *sc, const char *name) {
        for (size_t i = 0; i < sc->n_installed; i++)
                if (strcmp(sc->installed[i].name, name) == 0)
                        return true;
        return false;
}

/* Record that the worker gets d now: false when out of memory (it is then
 * not sent, and tried again at the next change). */
static bool installed_add(struct tool_scope *sc, const struct tool_def *d) {
        struct installed *grown = realloc(sc->installed, (sc->n_installed + 1) * sizeof(*grown));

        if (!grown)
                return false;
        sc->installed = grown;
        grown[sc->n_installed].name = strdup(d->name);
        if (!grown[sc->n_installed].name)
                return false;
        grown[sc->n_installed++].gen = d->gen;
        return true;
}

void tool_scope_worker_sync(struct tool_scope *sc) {
        struct tool_scope *scopes[2] = {sc, &sc->owner->global};
        struct tool_entry *e;

        if (!sc->session_id || !sc->host.is_idle(sc->host.data)) {
                sc->dirty = true;
                return;
        }
        sc->dirty = false;
        /* Gone or changed: remove or redefine. */
        for (size_t i = 0; i < sc->n_installed;) {
                e = tool_visible_entry(sc, sc->installed[i].name);
                if (e) {
                        if (e->def->gen != sc->installed[i].gen) {
                                send_define(sc, e->def);
                                sc->installed[i].gen = e->def->gen;
                        }
                        i++;
                        continue;
                }
                send_remove(sc, sc->installed[i].name);
                free(sc->installed[i].name);
                sc->installed[i] = sc->installed[--sc->n_installed];
        }
        /* New ones. */
        for (int k = 0; k < 2; k++)
                list_for_each(e, tmp, &scopes[k]->entries, struct tool_entry, link) {
                        if (!e->def || e->unlinked || tool_visible_entry(sc, e->name) != e ||
                            installed_has(sc, e->name))
                                continue;
                        if (installed_add(sc, e->def))
                                send_define(sc, e->def);
                }
}

void tool_scope_worker_ready(struct tool_scope *sc) {
        installed_clear(sc);
        tool_scope_worker_sync(sc);
}

/* ---- the registry ------------------------------------------------------------------ */

void tool_scope_free(struct tool_scope *sc) {
        struct tool_server *srv;
        struct tool_entry *e;

        if (!sc)
                return;
        if (sc->pending)
                tool_call_finish(sc->pending, NULL, "cancelled: the session closed", false);
        /* Its servers, its own tools' and the global ones it called, serve
         * no other session. */
        while ((srv = list_first(&sc->servers, struct tool_server, link)))
                tool_server_fail(srv, "the session closed");
        /* Handles still open on its files find nothing from now on. */
        while ((e = list_first(&sc->entries, struct tool_entry, link)))
                entry_free(e);
        installed_clear(sc);
        text_free(&sc->errors);
        list_unlink(&sc->link);
        free(sc);
}

int tools_new(struct loop *l, const struct options *o, struct tools **out) {
        struct tools *t = calloc(1, sizeof(*t));
        struct passwd *pw = getpwuid(getuid());

        if (!t)
                return -ENOMEM;
        t->loop = l;
        t->opt = o;
        scope_init(&t->global, t, 0);
        list_init(&t->scopes);
        list_init(&t->procs);
        t->home = strdup(pw && pw->pw_dir && *pw->pw_dir ? pw->pw_dir : "/");
        if (!t->home) {
                free(t);
                return -ENOMEM;
        }
        *out = t;
        return 0;
}

void tools_free(struct tools *t) {
        struct tool_entry *e;

        if (!t)
                return;
        while (!list_empty(&t->scopes))
                tool_scope_free(list_first(&t->scopes, struct tool_scope, link));
        while ((e = list_first(&t->global.entries, struct tool_entry, link)))
                entry_free(e);
        text_free(&t->global.errors);
        tool_procs_free(t);
        hash_free(&t->entries);
        free(t->home);
        free(t);
}
