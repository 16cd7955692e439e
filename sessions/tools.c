#include "tools.h"
#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit.h"
#include "log.h"
#include "loop.h"
#include "json_cleanup.h"
#include "macros.h"
#include "options.h"
#include "r_base_names.h"
#include "session.h"

/* What is kept of a tool's stderr for the error message: its end. */
#define STDERR_TAIL 4096u
/* .errors keeps this many lines. */
#define ERRORS_KEPT 100u
#define TIMEOUT_DEFAULT_S 10.0
#define TIMEOUT_MAX_S 3600.0
/* Audit lines keep this much of the arguments. */
#define AUDIT_ARGS_MAX 1024u
/* Refused calls (unknown tool, bad arguments) logged one by one per run;
 * the rest are counted and summed up in one line at the run's end, so that
 * a run cannot turn its calls into audit log bytes (docs/security.md). */
#define AUDIT_REFUSED_FULL 10u

enum arg_type { T_ANY, T_CHARACTER, T_NUMERIC, T_INTEGER, T_LOGICAL, T_LIST, T_DATA_FRAME, T_COUNT };
static const char *const type_names[T_COUNT] = {"", "character", "numeric", "integer", "logical", "list",
                                                "data.frame"};

/* A parsed, accepted definition; immutable, shared by the calls using it. */
struct tool_def {
        unsigned refs;
        uint64_t gen; /* unique: tells a worker's copy from a newer one */
        char *name;
        char *description;
        size_t n_args;
        char **arg_names;
        enum arg_type *arg_types;
        json_t *args_json;  /* {"name": "type", ...} as sent in define_tool */
        char **argv;        /* NULL-terminated */
        char **exec_paths;  /* where to look for argv[0], NULL-terminated */
        char **envp;        /* NULL-terminated */
        char *command_key;  /* the command as compact JSON: servers are shared by it */
        bool server;
        double timeout_s;
};

struct tool_entry {
        uint64_t id;
        struct tool_scope *scope;
        char *name;     /* NAME */
        char *filename; /* NAME.json */
        struct text text;
        struct tool_def *def; /* NULL until a definition is accepted */
        unsigned holds;
        bool unlinked;
        struct tool_entry *prev, *next;
};

struct installed {
        char *name;
        uint64_t gen;
};

struct tool_scope {
        struct tools *owner;
        struct session *session; /* NULL: the global scope */
        struct tool_entry *first, *last; /* ascending id */
        struct tool_server *servers;
        struct text errors;
        unsigned n_errors;
        /* Session scopes: what the worker has, and the run's calls. */
        struct installed *installed;
        size_t n_installed;
        bool dirty;
        struct tool_call *pending;
        uint64_t call_seq;
        json_int_t last_id;
        unsigned refused, refused_unlogged; /* in run call_seq */
        struct tool_scope *prev, *next;
};

/* A child process of ours; exited is NULL once nobody waits for it. */
struct tool_proc {
        pid_t pid;
        void (*exited)(void *data, int status);
        void *data;
        struct tool_proc *next;
};

/* A server process.  It lives in the scope of the session whose calls it
 * serves, also for a global tool: one session's slow, hung or crashing call
 * must never fail or delay another session's (docs/tools.md, "server"). */
struct tool_server {
        struct tool_scope *scope;
        bool global;        /* started for a global definition */
        char *command_key;
        struct tool_proc *proc;
        pid_t pid;
        int in_fd, out_fd, err_fd;
        struct text inbuf;
        size_t in_off;
        struct text line; /* stdout not yet ended by a newline */
        struct text err;
        uint64_t next_id;
        struct tool_call *calls;
        struct tool_server *next;
};

struct tool_call {
        struct tools *owner;
        struct tool_scope *waiter; /* the session scope whose worker waits */
        struct tool_def *def;
        json_int_t id;
        char *args_text;
        size_t args_len;
        uint64_t start_ns;
        struct loop_timer *timer;
        /* exec */
        struct tool_proc *proc;
        pid_t pid;
        int in_fd, out_fd, err_fd;
        size_t in_off;
        struct text out, err;
        bool exited;
        int status;
        /* server */
        struct tool_server *server;
        uint64_t server_id;
        struct tool_call *srv_prev, *srv_next;
        bool quiet; /* a refusal past AUDIT_REFUSED_FULL: counted, not logged */
};

struct tools {
        struct loop *loop;
        const struct options *opt;
        struct tool_scope global;
        struct tool_scope *scopes; /* session scopes */
        struct tool_proc *procs;
        uint64_t next_entry_id;
        uint64_t next_gen;
        char *home;
};

static void scope_sync(struct tool_scope *sc);
static void call_finish(struct tool_call *c, json_t *value, const char *error, bool send);
static void server_fail(struct tool_server *srv, const char *why);

/* ---- small helpers ---------------------------------------------------- */

static void strv_free(char **v) {
        if (v)
                for (char **p = v; *p; p++)
                        free(*p);
        free(v);
}

/* A JSON string of s, cleaned first: messages are formatted with %.64s-style
 * cuts (which can split a character) from names that need not be UTF-8 (FUSE
 * file names), and jansson refuses a string that is not valid UTF-8. */
static json_t *json_string_clean(const char *s) {
        size_t len;
        char *clean = utf8_sanitize_dup(s, strlen(s), &len);
        json_t *j = clean ? json_stringn(clean, len) : NULL;

        free(clean);
        return j;
}

/* The end of a stderr buffer as a one-paragraph message ("" if empty). */
static char *tail_message(const struct text *err) {
        size_t start = 0, end = err->len, n;
        char *s;

        while (end > 0 && (err->data[end - 1] == '\n' || err->data[end - 1] == ' ' || err->data[end - 1] == '\r'))
                end--;
        if (end > STDERR_TAIL)
                start = end - STDERR_TAIL;
        /* Skip a partial UTF-8 character at the cut. */
        while (start < end && ((unsigned char)err->data[start] & 0xC0) == 0x80)
                start++;
        s = utf8_sanitize_dup(err->data ? err->data + start : "", end - start, &n);
        return s ? s : strdup("");
}

static void keep_tail(struct text *t, const char *data, size_t n) {
        text_append(t, data, n);
        if (t->len > 2 * STDERR_TAIL) {
                memmove(t->data, t->data + t->len - STDERR_TAIL, STDERR_TAIL);
                t->len = STDERR_TAIL;
                t->data[t->len] = '\0';
        }
}

static void close_watched(struct tools *t, int *fd) {
        if (*fd < 0)
                return;
        loop_del_fd(t->loop, *fd);
        close(*fd);
        *fd = -1;
}

/* ---- names ------------------------------------------------------------ */

static int cmp_name(const void *key, const void *elem) { return strcmp(key, *(const char *const *)elem); }

/* A syntactic R name (ASCII letters only) that is not a reserved word. */
static bool syntactic_name(const char *name, const char **why) {
        static const char *const reserved[] = {"if", "else", "repeat", "while", "function", "for", "next", "break",
                                               "TRUE", "FALSE", "NULL", "Inf", "NaN", "NA", "NA_integer_",
                                               "NA_real_", "NA_character_", "NA_complex_", "in"};
        size_t n = strlen(name);

        *why = NULL;
        if (n == 0 || n > 100) {
                *why = "a tool name has 1 to 100 characters";
                return false;
        }
        /* A syntactic R name (ASCII letters only): a letter, or a dot not
         * followed by a digit, then letters, digits, dots, underscores. */
        if (!(((name[0] | 0x20) >= 'a' && (name[0] | 0x20) <= 'z') ||
              (name[0] == '.' && !(name[1] >= '0' && name[1] <= '9')))) {
                *why = "not a syntactic R name (it must start with a letter, or a dot not followed by a digit)";
                return false;
        }
        if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._") != n) {
                *why = "not a syntactic R name (letters, digits, '.' and '_' only)";
                return false;
        }
        for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
                if (strcmp(name, reserved[i]) == 0) {
                        *why = "a reserved word of R";
                        return false;
                }
        if (strcmp(name, "...") == 0 || (name[0] == '.' && name[1] == '.' && strspn(name + 2, "0123456789") == n - 2)) {
                *why = "a reserved word of R";
                return false;
        }
        if (strncmp(name, ".securerfs", 10) == 0) {
                *why = "names starting with .securerfs belong to the session runtime";
                return false;
        }
        return true;
}

static bool tool_arg_name_ok(const char *name, const char **why) { return syntactic_name(name, why); }

bool tool_name_valid(const char *name, const char **why) {
        if (!syntactic_name(name, why))
                return false;
        if (bsearch(name, r_base_names, ARRAY_SIZE(r_base_names), sizeof(r_base_names[0]), cmp_name)) {
                *why = "the name of a function or object of R's base package, which the tool would hide";
                return false;
        }
        return true;
}

/* "NAME.json" → NAME (malloc'ed) when NAME is valid; else NULL and *why. */
static char *filename_to_name(const char *filename, const char **why) {
        size_t n = strlen(filename);
        char *name;

        if (n <= 5 || strcmp(filename + n - 5, ".json") != 0) {
                *why = "tool files are named NAME.json";
                return NULL;
        }
        name = strndup(filename, n - 5);
        if (!name) {
                *why = "out of memory";
                return NULL;
        }
        if (!tool_name_valid(name, why)) {
                free(name);
                return NULL;
        }
        return name;
}

/* ---- the .errors file ------------------------------------------------ */

static void scope_record_error(struct tool_scope *sc, const char *filename, const char *error) {
        char *line;
        size_t len;

        log_info("%s%s%stools/%s: refused: %s", sc->session ? "sessions/" : "",
                 sc->session ? sc->session->name : "", sc->session ? "/" : "", filename, error);
        line = audit_format(json_pack("{s:o, s:o}", "tool", json_string_clean(filename), "error",
                                      json_string_clean(error)),
                            &len);
        if (!line)
                return;
        if (sc->n_errors == ERRORS_KEPT) {
                char *nl = memchr(sc->errors.data, '\n', sc->errors.len);
                size_t cut = nl ? (size_t)(nl + 1 - sc->errors.data) : sc->errors.len;
                memmove(sc->errors.data, sc->errors.data + cut, sc->errors.len - cut);
                sc->errors.len -= cut;
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

/* ---- definitions -------------------------------------------------------- */

static void def_unref(struct tool_def *d) {
        if (!d || --d->refs > 0)
                return;
        free(d->name);
        free(d->description);
        strv_free(d->arg_names);
        free(d->arg_types);
        json_decref(d->args_json);
        strv_free(d->argv);
        strv_free(d->exec_paths);
        strv_free(d->envp);
        free(d->command_key);
        free(d);
}

static struct tool_def *def_ref(struct tool_def *d) {
        d->refs++;
        return d;
}

static bool has_nul(const json_t *s) { return strlen(json_string_value(s)) != json_string_length(s); }

/* Where execve should look for argv0: itself if it has a slash, else each
 * directory of PATH (the tool's own environment's). */
static char **exec_paths(const char *argv0, char *const *envp) {
        const char *path = "/usr/bin:/bin";
        size_t n = 0;
        char **v;

        for (char *const *e = envp; *e; e++)
                if (strncmp(*e, "PATH=", 5) == 0)
                        path = *e + 5;
        if (strchr(argv0, '/')) {
                v = calloc(2, sizeof(*v));
                if (v && !(v[0] = strdup(argv0))) {
                        free(v);
                        return NULL;
                }
                return v;
        }
        v = calloc(strlen(path) + 2, sizeof(*v));
        if (!v)
                return NULL;
        for (const char *p = path;;) {
                const char *colon = strchr(p, ':');
                size_t len = colon ? (size_t)(colon - p) : strlen(p);
                if (asprintf(&v[n], "%.*s/%s", (int)len, len ? p : ".", argv0) < 0) {
                        v[n] = NULL;
                        strv_free(v);
                        return NULL;
                }
                n++;
                if (!colon)
                        break;
                p = colon + 1;
        }
        return v;
}

/* Parse and check a definition.  Returns the new definition, or NULL with
 * a reason in err. */
static struct tool_def *def_parse(struct tools *t, const char *name, const char *text, size_t len, char *err,
                                  size_t errlen) {
        static const char *const known[] = {"description", "args", "command", "mode", "timeout", "env"};
        _cleanup_json_ json_t *j = NULL;
        struct tool_def *d = NULL;
        json_error_t jerr;
        json_t *v, *args, *cmd, *mode, *timeout, *env;
        const char *key;
        size_t i, n_env = 0;

        j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!j) {
                snprintf(err, errlen, "not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
                return NULL;
        }
        if (!json_is_object(j)) {
                snprintf(err, errlen, "a definition is a JSON object with description, args and command");
                return NULL;
        }
        json_object_foreach(j, key, v) {
                for (i = 0; i < ARRAY_SIZE(known); i++)
                        if (strcmp(key, known[i]) == 0)
                                break;
                if (i == ARRAY_SIZE(known)) {
                        snprintf(err, errlen,
                                 "unknown field \"%.64s\" (known: description, args, command, mode, timeout, env)",
                                 key);
                        return NULL;
                }
        }
        v = json_object_get(j, "description");
        args = json_object_get(j, "args");
        cmd = json_object_get(j, "command");
        mode = json_object_get(j, "mode");
        timeout = json_object_get(j, "timeout");
        env = json_object_get(j, "env");
        if (!v || !args || !cmd) {
                snprintf(err, errlen, "missing field \"%s\"", !v ? "description" : !args ? "args" : "command");
                return NULL;
        }
        if (!json_is_string(v) || has_nul(v)) {
                snprintf(err, errlen, "\"description\" must be a string");
                return NULL;
        }
        if (!json_is_object(args)) {
                snprintf(err, errlen, "\"args\" must be an object of argument name to type ({} for none)");
                return NULL;
        }
        if (!json_is_array(cmd) || json_array_size(cmd) == 0) {
                snprintf(err, errlen, "\"command\" must be a non-empty array of strings");
                return NULL;
        }
        json_array_foreach(cmd, i, v) if (!json_is_string(v) || has_nul(v) || (i == 0 && !*json_string_value(v))) {
                snprintf(err, errlen, "\"command\" must be a non-empty array of strings (element %zu is not%s)", i,
                         i == 0 ? " a program" : " a string");
                return NULL;
        }
        if (mode && (!json_is_string(mode) ||
                     (strcmp(json_string_value(mode), "exec") && strcmp(json_string_value(mode), "server")))) {
                snprintf(err, errlen, "\"mode\" must be \"exec\" or \"server\"");
                return NULL;
        }
        if (timeout && (!json_is_number(timeout) || !(json_number_value(timeout) > 0) ||
                        json_number_value(timeout) > TIMEOUT_MAX_S)) {
                snprintf(err, errlen, "\"timeout\" must be a number of seconds above 0, at most %g", TIMEOUT_MAX_S);
                return NULL;
        }
        if (env) {
                if (!json_is_object(env)) {
                        snprintf(err, errlen, "\"env\" must be an object of strings");
                        return NULL;
                }
                json_object_foreach(env, key, v) {
                        if (!*key || strchr(key, '=') || !json_is_string(v) || has_nul(v)) {
                                snprintf(err, errlen, "\"env\" must be an object of strings (bad entry \"%.64s\")",
                                         key);
                                return NULL;
                        }
                        n_env++;
                }
        }
        d = calloc(1, sizeof(*d));
        if (!d)
                goto oom;
        d->refs = 1;
        d->gen = ++t->next_gen;
        d->server = mode && strcmp(json_string_value(mode), "server") == 0;
        d->timeout_s = timeout ? json_number_value(timeout) : TIMEOUT_DEFAULT_S;
        if (!(d->name = strdup(name)) || !(d->description = strdup(json_string_value(json_object_get(j, "description")))))
                goto oom;
        d->n_args = json_object_size(args);
        d->arg_names = calloc(d->n_args + 1, sizeof(char *));
        d->arg_types = calloc(d->n_args + 1, sizeof(enum arg_type));
        d->args_json = json_object();
        if (!d->arg_names || !d->arg_types || !d->args_json)
                goto oom;
        i = 0;
        json_object_foreach(args, key, v) {
                const char *why;
                int k;

                if (!tool_arg_name_ok(key, &why)) {
                        snprintf(err, errlen, "argument \"%.64s\": %s", key, why);
                        goto bad;
                }
                for (k = 0; k < T_COUNT; k++)
                        if (json_is_string(v) && strcmp(json_string_value(v), type_names[k]) == 0)
                                break;
                if (k == T_COUNT) {
                        snprintf(err, errlen,
                                 "argument \"%s\": unknown type %s%.40s%s (known: character, numeric, integer, "
                                 "logical, list, data.frame, or \"\" for any)",
                                 key, json_is_string(v) ? "\"" : "", json_is_string(v) ? json_string_value(v) : "(not a string)",
                                 json_is_string(v) ? "\"" : "");
                        goto bad;
                }
                if (!(d->arg_names[i] = strdup(key)))
                        goto oom;
                d->arg_types[i] = (enum arg_type)k;
                json_object_set_new(d->args_json, key, json_string(type_names[k]));
                i++;
        }
        d->argv = calloc(json_array_size(cmd) + 1, sizeof(char *));
        if (!d->argv)
                goto oom;
        json_array_foreach(cmd, i, v) if (!(d->argv[i] = strdup(json_string_value(v)))) goto oom;
        d->command_key = json_dumps(cmd, JSON_COMPACT);
        /* A clean environment plus what the definition names. */
        d->envp = calloc(3 + n_env + 1, sizeof(char *));
        if (!d->command_key || !d->envp)
                goto oom;
        {
                size_t n = 0;
                const char *defaults[3][2] = {{"PATH", "/usr/bin:/bin"}, {"LANG", "C.UTF-8"}, {"HOME", t->home}};
                for (size_t k = 0; k < 3; k++) {
                        json_t *over = env ? json_object_get(env, defaults[k][0]) : NULL;
                        if (asprintf(&d->envp[n], "%s=%s", defaults[k][0],
                                     over ? json_string_value(over) : defaults[k][1]) < 0) {
                                d->envp[n] = NULL;
                                goto oom;
                        }
                        n++;
                }
                if (env)
                        json_object_foreach(env, key, v) {
                                if (!strcmp(key, "PATH") || !strcmp(key, "LANG") || !strcmp(key, "HOME"))
                                        continue;
                                if (asprintf(&d->envp[n], "%s=%s", key, json_string_value(v)) < 0) {
                                        d->envp[n] = NULL;
                                        goto oom;
                                }
                                n++;
                        }
        }
        d->exec_paths = exec_paths(d->argv[0], d->envp);
        if (!d->exec_paths)
                goto oom;
        return d;
oom:
        snprintf(err, errlen, "out of memory");
bad:
        def_unref(d);
        return NULL;
}

/* ---- scopes and entries ------------------------------------------------ */

struct tool_scope *tools_global(struct tools *t) { return &t->global; }

struct session *tool_scope_session(const struct tool_scope *sc) { return sc->session; }

struct tool_scope *tools_session_scope(struct tools *t, struct session *s) {
        struct tool_scope *sc = s->tools;

        if (sc)
                return sc;
        sc = calloc(1, sizeof(*sc));
        if (!sc)
                return NULL;
        sc->owner = t;
        sc->session = s;
        sc->next = t->scopes;
        if (t->scopes)
                t->scopes->prev = sc;
        t->scopes = sc;
        s->tools = sc;
        return sc;
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
        for (struct tool_entry *e = sc->first; e; e = e->next)
                if (!e->unlinked && strcmp(e->filename, filename) == 0)
                        return e;
        return NULL;
}

static struct tool_entry *scope_find_id(struct tool_scope *sc, uint64_t id) {
        for (struct tool_entry *e = sc->first; e; e = e->next)
                if (e->id == id)
                        return e;
        return NULL;
}

struct tool_entry *tools_entry_by_id(struct tools *t, uint64_t id) {
        struct tool_entry *e = scope_find_id(&t->global, id);

        for (struct tool_scope *sc = t->scopes; !e && sc; sc = sc->next)
                e = scope_find_id(sc, id);
        return e;
}

struct tool_entry *tools_entry_next(struct tool_scope *sc, uint64_t after) {
        for (struct tool_entry *e = sc->first; e; e = e->next)
                if (e->id > after && !e->unlinked)
                        return e;
        return NULL;
}

/* The entry with a definition a session scope sees for name: its own, else
 * the global one. */
static struct tool_entry *visible_entry(struct tool_scope *sc, const char *name) {
        struct tool_scope *scopes[2] = {sc, &sc->owner->global};

        for (int i = 0; i < 2; i++)
                for (struct tool_entry *e = scopes[i]->first; e; e = e->next)
                        if (e->def && !e->unlinked && strcmp(e->name, name) == 0)
                                return e;
        return NULL;
}

/* Servers in session scope sc started for definitions of defs (sc itself,
 * or the global scope) end when no server-mode definition of defs names
 * their command any more (their last tool is gone). */
static void scope_prune_servers(struct tool_scope *sc, struct tool_scope *defs) {
        struct tool_server *srv, *next;

        for (srv = sc->servers; srv; srv = next) {
                bool used = false;
                next = srv->next;
                if (srv->global != (defs->session == NULL))
                        continue;
                for (struct tool_entry *e = defs->first; e && !used; e = e->next)
                        used = e->def && !e->unlinked && e->def->server &&
                               strcmp(e->def->command_key, srv->command_key) == 0;
                if (!used)
                        server_fail(srv, "the tool was removed");
        }
}

/* Definitions of sc changed: tell every session they reach. */
static void scope_changed(struct tool_scope *sc) {
        if (sc->session) {
                scope_prune_servers(sc, sc);
                scope_sync(sc);
                return;
        }
        for (struct tool_scope *s = sc->owner->scopes; s; s = s->next) {
                scope_prune_servers(s, sc);
                scope_sync(s);
        }
}

static void entry_free(struct tool_entry *e) {
        struct tool_scope *sc = e->scope;

        if (e->prev)
                e->prev->next = e->next;
        else
                sc->first = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                sc->last = e->prev;
        def_unref(e->def);
        text_free(&e->text);
        free(e->name);
        free(e->filename);
        free(e);
}

static struct tool_entry *entry_new(struct tool_scope *sc, char *name /* taken */) {
        struct tool_entry *e = calloc(1, sizeof(*e));

        if (!e || asprintf(&e->filename, "%s.json", name) < 0) {
                free(e);
                free(name);
                return NULL;
        }
        e->name = name;
        e->id = ++sc->owner->next_entry_id;
        e->scope = sc;
        e->prev = sc->last;
        if (sc->last)
                sc->last->next = e;
        else
                sc->first = e;
        sc->last = e;
        return e;
}

int tools_entry_create(struct tool_scope *sc, const char *filename, struct tool_entry **out) {
        const char *why;
        char *name;
        struct tool_entry *e;

        if (tools_entry_lookup(sc, filename))
                return -EEXIST;
        name = filename_to_name(filename, &why);
        if (!name) {
                scope_record_error(sc, filename, why);
                return -EINVAL;
        }
        e = entry_new(sc, name);
        if (!e)
                return -ENOMEM;
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
        char err[512];

        if (e->unlinked)
                return 0;
        d = def_parse(sc->owner, e->name, text, len, err, sizeof(err));
        if (!d) {
                scope_record_error(sc, e->filename, err);
                return -EINVAL;
        }
        def_unref(e->def);
        e->def = d;
        e->text.len = 0;
        text_append(&e->text, text, len);
        log_info("%s%s%stools/%s: defined (%s, %zu argument%s)", sc->session ? "sessions/" : "",
                 sc->session ? sc->session->name : "", sc->session ? "/" : "", e->filename,
                 d->server ? "server" : "exec", d->n_args, d->n_args == 1 ? "" : "s");
        scope_changed(sc);
        return 0;
}

static void entry_unlink(struct tool_entry *e) {
        bool had_def = e->def != NULL;
        struct tool_scope *sc = e->scope;

        e->unlinked = true;
        def_unref(e->def);
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
        name = filename_to_name(to, &why);
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
                 * file gets a copy under the new name. */
                char err[512];
                struct tool_def *d = def_parse(sc->owner, name, e->text.data, e->text.len, err, sizeof(err));
                if (!d) {
                        free(name);
                        free(filename);
                        return -ENOMEM;
                }
                def_unref(e->def);
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

/* ---- definitions reaching workers -------------------------------------- */

static void installed_clear(struct tool_scope *sc) {
        for (size_t i = 0; i < sc->n_installed; i++)
                free(sc->installed[i].name);
        free(sc->installed);
        sc->installed = NULL;
        sc->n_installed = 0;
}

static int send_define(struct session *s, const struct tool_def *d) {
        _cleanup_json_ json_t *m = json_pack("{s:s, s:s, s:O, s:s}", "type", "define_tool", "name", d->name, "args",
                                             d->args_json, "description", d->description);
        return m ? session_worker_send(s, m) : -ENOMEM;
}

static int send_remove(struct session *s, const char *name) {
        _cleanup_json_ json_t *m = json_pack("{s:s, s:s}", "type", "remove_tool", "name", name);
        return m ? session_worker_send(s, m) : -ENOMEM;
}

/* Bring the worker of a session scope up to date with what it should see,
 * or mark the scope to be done when the worker is next idle. */
static void scope_sync(struct tool_scope *sc) {
        struct session *s = sc->session;
        struct tool_scope *scopes[2] = {sc, &sc->owner->global};

        if (!s || !session_accepts_definitions(s)) {
                sc->dirty = true;
                return;
        }
        sc->dirty = false;
        /* Gone or changed: remove or redefine. */
        for (size_t i = 0; i < sc->n_installed;) {
                struct tool_entry *e = visible_entry(sc, sc->installed[i].name);
                if (e) {
                        if (e->def->gen != sc->installed[i].gen) {
                                send_define(s, e->def);
                                sc->installed[i].gen = e->def->gen;
                        }
                        i++;
                        continue;
                }
                send_remove(s, sc->installed[i].name);
                free(sc->installed[i].name);
                sc->installed[i] = sc->installed[--sc->n_installed];
        }
        /* New ones. */
        for (int k = 0; k < 2; k++)
                for (struct tool_entry *e = scopes[k]->first; e; e = e->next) {
                        size_t i;
                        struct installed *grown;

                        if (!e->def || e->unlinked || visible_entry(sc, e->name) != e)
                                continue;
                        for (i = 0; i < sc->n_installed; i++)
                                if (strcmp(sc->installed[i].name, e->name) == 0)
                                        break;
                        if (i < sc->n_installed)
                                continue;
                        grown = realloc(sc->installed, (sc->n_installed + 1) * sizeof(*grown));
                        if (!grown)
                                continue;
                        sc->installed = grown;
                        grown[sc->n_installed].name = strdup(e->name);
                        if (!grown[sc->n_installed].name)
                                continue;
                        grown[sc->n_installed++].gen = e->def->gen;
                        send_define(s, e->def);
                }
}

void tools_session_ready(struct tools *t, struct session *s) {
        struct tool_scope *sc = tools_session_scope(t, s);

        if (!sc)
                return;
        installed_clear(sc);
        scope_sync(sc);
}

/* ---- processes ---------------------------------------------------------- */

static void proc_exited(pid_t pid, int status, const struct rusage *ru, void *data);

/* Track tool process pid; its exit comes to proc_exited() through its
 * child-exit watch.  NULL when out of memory (pid's exit then reaches
 * nobody: the caller kills its group). */
static struct tool_proc *proc_add(struct tools *t, pid_t pid, void (*exited)(void *, int), void *data) {
        struct tool_proc *p = calloc(1, sizeof(*p));

        if (!p)
                return NULL;
        if (loop_watch_child(t->loop, pid, proc_exited, t) < 0) {
                free(p);
                return NULL;
        }
        p->pid = pid;
        p->exited = exited;
        p->data = data;
        p->next = t->procs;
        t->procs = p;
        return p;
}

/* A tool process's child-exit watch (from proc_add). */
static void proc_exited(pid_t pid, int status, const struct rusage *ru, void *data) {
        struct tools *t = data;

        for (struct tool_proc **pp = &t->procs; *pp; pp = &(*pp)->next) {
                struct tool_proc *p = *pp;
                if (p->pid != pid)
                        continue;
                *pp = p->next;
                /* Whatever the tool left in its process group goes with it. */
                kill(-pid, SIGKILL);
                if (p->exited)
                        p->exited(p->data, status);
                free(p);
                return;
        }
}

/* Kill a process's group and stop caring about its exit (it is still
 * reaped through the proc list). */
static void proc_abandon(struct tool_proc **pp) {
        struct tool_proc *p = *pp;

        if (!p)
                return;
        kill(-p->pid, SIGKILL);
        p->exited = NULL;
        p->data = NULL;
        *pp = NULL;
}

static int pipe_pair(int fds[2], bool parent_reads) {
        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        if (fcntl(fds[parent_reads ? 0 : 1], F_SETFL, O_NONBLOCK) < 0) {
                int e = -errno;
                close(fds[0]);
                close(fds[1]);
                return e;
        }
        return 0;
}

/* Start d's command with three pipes: fds[0] its stdin (ours to write),
 * fds[1] its stdout, fds[2] its stderr (ours to read), all non-blocking on
 * our side.  0 with *pid, or -errno. */
static int spawn_tool(const struct tool_def *d, int fds[3], pid_t *pid_out) {
        int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, e;
        pid_t pid;

        if ((e = pipe_pair(in, false)) < 0 || (e = pipe_pair(out, true)) < 0 || (e = pipe_pair(err, true)) < 0)
                goto fail;
        pid = fork();
        if (pid < 0) {
                e = -errno;
                goto fail;
        }
        if (pid == 0) {
                /* Child of fork(), on the host, as the daemon's user, outside
                 * any jail: a tool process.  Only async-signal-safe calls
                 * until execve. */
                struct sigaction dfl = {.sa_handler = SIG_DFL};
                sigset_t none;
                static const char msg1[] = "securerfs: cannot run ";
                int saved = ENOENT;

                setpgid(0, 0);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
                        _exit(126);
                /* Nothing of the daemon's (the FUSE channel, worker sockets,
                 * other tools' pipes) reaches the tool. */
                if (close_range(3, ~0u, 0) < 0)
                        for (int fd = 3; fd < 65536; fd++)
                                close(fd);
                for (int sig = 1; sig < NSIG; sig++)
                        sigaction(sig, &dfl, NULL);
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                if (chdir("/") < 0)
                        _exit(126);
                for (char **p = d->exec_paths; *p; p++) {
                        execve(*p, d->argv, d->envp);
                        if (errno != ENOENT && errno != ENOTDIR)
                                saved = errno;
                }
                (void)!write(2, msg1, sizeof(msg1) - 1);
                (void)!write(2, d->argv[0], strlen(d->argv[0]));
                (void)!write(2, ": ", 2);
                (void)!write(2, strerror(saved), strlen(strerror(saved)));
                (void)!write(2, "\n", 1);
                _exit(127);
        }
        /* Also here: a kill of the group right after fork must reach it. */
        setpgid(pid, pid);
        close(in[0]);
        close(out[1]);
        close(err[1]);
        fds[0] = in[1];
        fds[1] = out[0];
        fds[2] = err[0];
        *pid_out = pid;
        return 0;
fail:
        for (int i = 0; i < 2; i++) {
                if (in[i] >= 0)
                        close(in[i]);
                if (out[i] >= 0)
                        close(out[i]);
                if (err[i] >= 0)
                        close(err[i]);
        }
        return e;
}

/* Write what is pending from buf to fd; 1 when all is written, 0 when the
 * pipe is full (EPOLLOUT is then watched), -errno. */
static int pipe_flush(struct tools *t, int fd, const char *buf, size_t len, size_t *off) {
        while (*off < len) {
                ssize_t n = write(fd, buf + *off, len - *off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                loop_mod_fd(t->loop, fd, EPOLLOUT);
                                return 0;
                        }
                        return -errno;
                }
                *off += (size_t)n;
        }
        return 1;
}

/* ---- calls ---------------------------------------------------------------- */

static void call_audit(struct tool_call *c, struct session *s, const char *error) {
        json_t *ev;
        size_t cut = MIN(c->args_len, (size_t)AUDIT_ARGS_MAX);

        if (!s)
                return;
        while (cut < c->args_len && cut > 0 && ((unsigned char)c->args_text[cut] & 0xC0) == 0x80)
                cut--;
        ev = json_pack("{s:s, s:o, s:s%, s:f, s:s}", "event", "tool_call", "tool",
                       json_string_clean(c->def ? c->def->name : ""),
                       "args", c->args_text ? c->args_text : "", c->args_text ? MIN(cut, c->args_len - 1) : 0, "elapsed_ms",
                       round((double)(now_ns() - c->start_ns) / 1e3) / 1e3, "status", error ? "error" : "ok");
        if (ev && error)
                json_object_set_new(ev, "error", json_string_clean(error));
        if (ev)
                session_audit(s, ev);
}

static void send_result(struct session *s, json_int_t id, json_t *value, const char *error) {
        _cleanup_json_ json_t *m = NULL;

        if (error)
                m = json_pack("{s:s, s:I, s:o}", "type", "tool_result", "id", id, "error", json_string_clean(error));
        else
                m = json_pack("{s:s, s:I, s:O}", "type", "tool_result", "id", id, "value", value ? value : json_null());
        if (m)
                session_worker_send(s, m);
}

static void call_free(struct tool_call *c) {
        struct tools *t = c->owner;

        loop_timer_free(c->timer);
        proc_abandon(&c->proc);
        close_watched(t, &c->in_fd);
        close_watched(t, &c->out_fd);
        close_watched(t, &c->err_fd);
        if (c->server) {
                if (c->srv_prev)
                        c->srv_prev->srv_next = c->srv_next;
                else
                        c->server->calls = c->srv_next;
                if (c->srv_next)
                        c->srv_next->srv_prev = c->srv_prev;
        }
        text_free(&c->out);
        text_free(&c->err);
        def_unref(c->def);
        free(c->args_text);
        free(c);
}

/* The call ended: answer the worker (unless send is false: the run it
 * belonged to is over), log it, free it.  value is stolen. */
static void call_finish(struct tool_call *c, json_t *value, const char *error, bool send) {
        struct tool_scope *w = c->waiter;
        struct session *s = w ? w->session : NULL;

        if (w && w->pending == c)
                w->pending = NULL;
        if (s && send)
                send_result(s, c->id, value, error);
        if (!c->quiet)
                call_audit(c, s, error);
        json_decref(value);
        call_free(c);
}

static void call_new_timer(struct tool_call *c, void (*fn)(void *)) {
        c->timer = loop_timer_new(c->owner->loop, fn, c);
        if (c->timer)
                loop_timer_arm(c->timer, c->start_ns + (uint64_t)(c->def->timeout_s * 1e9));
}

/* ---- exec mode ---------------------------------------------------------- */

/* stdout of a successful exec: JSON, or else the text as a string; empty is
 * null. */
static json_t *exec_value(const struct text *out) {
        size_t n = out->len, clean_len;
        const char *p = out->data ? out->data : "";
        json_t *j;
        _cleanup_free_ char *clean = NULL;

        while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
                n--;
        if (strspn(p, " \t\r\n") >= n)
                return json_null();
        j = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        if (j)
                return j;
        clean = utf8_sanitize_dup(p, n, &clean_len);
        return clean ? json_stringn(clean, clean_len) : json_null();
}

static void exec_maybe_done(struct tool_call *c) {
        char msg[256];
        _cleanup_free_ char *tail = NULL;
        int st = c->status;

        if (!c->exited || c->out_fd >= 0 || c->err_fd >= 0)
                return;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
                call_finish(c, exec_value(&c->out), NULL, true);
                return;
        }
        tail = tail_message(&c->err);
        if (WIFSIGNALED(st)) {
                snprintf(msg, sizeof(msg), "the tool was killed by signal %d (%s)", WTERMSIG(st),
                         strsignal(WTERMSIG(st)));
        } else {
                snprintf(msg, sizeof(msg), "the tool exited with status %d", WEXITSTATUS(st));
        }
        if (*tail && WIFEXITED(st)) {
                call_finish(c, NULL, tail, true);
        } else if (*tail) {
                _cleanup_free_ char *both = NULL;
                if (asprintf(&both, "%s: %s", msg, tail) < 0)
                        both = NULL;
                call_finish(c, NULL, both ? both : msg, true);
        } else {
                call_finish(c, NULL, msg, true);
        }
}

static void exec_exited(void *data, int status) {
        struct tool_call *c = data;

        c->proc = NULL;
        c->exited = true;
        c->status = status;
        exec_maybe_done(c);
}

/* Read what a pipe has: 1 at end of file, 0 for now, -errno. */
static int drain(int fd, struct text *into, size_t cap, bool tail, bool *over) {
        char buf[65536];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -errno;
                }
                if (n == 0)
                        return 1;
                if (tail) {
                        keep_tail(into, buf, (size_t)n);
                } else if (into->len + (size_t)n > cap) {
                        *over = true;
                        return 0;
                } else {
                        text_append(into, buf, (size_t)n);
                }
        }
}

static void exec_on_io(int fd, uint32_t events, void *data) {
        struct tool_call *c = data;
        struct tools *t = c->owner;
        bool over = false;
        int r;

        if (fd == c->in_fd) {
                r = pipe_flush(t, fd, c->args_text, c->args_len, &c->in_off);
                /* All written, or the tool closed its stdin (EPIPE): done
                 * with it either way. */
                if (r != 0)
                        close_watched(t, &c->in_fd);
                return;
        }
        if (fd == c->out_fd) {
                r = drain(fd, &c->out, TOOL_IO_MAX, false, &over);
                if (over) {
                        call_finish(c, NULL, "the tool's reply is over 1 MiB", true);
                        return;
                }
                if (r != 0)
                        close_watched(t, &c->out_fd);
        } else if (fd == c->err_fd) {
                r = drain(fd, &c->err, 0, true, &over);
                if (r != 0)
                        close_watched(t, &c->err_fd);
        }
        exec_maybe_done(c);
}

static void exec_on_timeout(void *data) {
        struct tool_call *c = data;
        char msg[128];

        snprintf(msg, sizeof(msg), "the tool did not finish within its timeout of %g s and was killed",
                 c->def->timeout_s);
        call_finish(c, NULL, msg, true);
}

static int exec_start(struct tool_call *c) {
        struct tools *t = c->owner;
        int fds[3], e;

        e = spawn_tool(c->def, fds, &c->pid);
        if (e < 0)
                return e;
        c->in_fd = fds[0];
        c->out_fd = fds[1];
        c->err_fd = fds[2];
        c->proc = proc_add(t, c->pid, exec_exited, c);
        if (!c->proc) {
                kill(-c->pid, SIGKILL);
                /* Still our child: reaped as an unknown pid. */
        }
        if (loop_add_fd(t->loop, c->in_fd, EPOLLOUT, exec_on_io, c) < 0 ||
            loop_add_fd(t->loop, c->out_fd, EPOLLIN, exec_on_io, c) < 0 ||
            loop_add_fd(t->loop, c->err_fd, EPOLLIN, exec_on_io, c) < 0 || !c->proc)
                return -ENOMEM;
        /* The arguments, one JSON object and a newline. */
        e = pipe_flush(t, c->in_fd, c->args_text, c->args_len, &c->in_off);
        if (e != 0)
                close_watched(t, &c->in_fd);
        call_new_timer(c, exec_on_timeout);
        return c->timer ? 0 : -ENOMEM;
}

/* ---- server mode -------------------------------------------------------- */

static void server_free(struct tool_server *srv) {
        struct tools *t = srv->scope->owner;

        for (struct tool_server **pp = &srv->scope->servers; *pp; pp = &(*pp)->next)
                if (*pp == srv) {
                        *pp = srv->next;
                        break;
                }
        proc_abandon(&srv->proc);
        close_watched(t, &srv->in_fd);
        close_watched(t, &srv->out_fd);
        close_watched(t, &srv->err_fd);
        text_free(&srv->inbuf);
        text_free(&srv->line);
        text_free(&srv->err);
        free(srv->command_key);
        free(srv);
}

/* The server is ended (or died): every call in flight fails with why (plus
 * the end of its stderr), and the next call starts a new one. */
static void server_fail(struct tool_server *srv, const char *why) {
        _cleanup_free_ char *tail = NULL, *msg = NULL;
        bool over = false;

        if (srv->err_fd >= 0)
                drain(srv->err_fd, &srv->err, 0, true, &over);
        tail = tail_message(&srv->err);
        if (*tail && asprintf(&msg, "%s: %s", why, tail) < 0)
                msg = NULL;
        /* Detach first: finishing a call must not find the server. */
        proc_abandon(&srv->proc);
        while (srv->calls)
                call_finish(srv->calls, NULL, msg ? msg : why, true);
        server_free(srv);
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
        server_fail(srv, why);
}

/* One line of the server's stdout: {"id": N, "value": ...} or {"id": N,
 * "error": "..."}.  Lines that are not such a reply (a server's debugging
 * output) are ignored. */
static void server_line(struct tool_server *srv, const char *line, size_t len) {
        _cleanup_json_ json_t *j = json_loadb(line, len, 0, NULL);
        json_t *id = json_object_get(j, "id"), *err = json_object_get(j, "error");
        struct tool_call *c;

        if (!json_is_integer(id)) {
                log_debug("tool server %s: ignoring a line that is not a reply", srv->command_key);
                return;
        }
        for (c = srv->calls; c; c = c->srv_next)
                if (c->server_id == (uint64_t)json_integer_value(id))
                        break;
        if (!c)
                return; /* a reply to a call that was cancelled */
        if (err && !json_is_null(err)) {
                _cleanup_free_ char *text = json_is_string(err) ? NULL : json_dumps(err, JSON_ENCODE_ANY);
                call_finish(c, NULL, text ? text : json_string_value(err), true);
                return;
        }
        call_finish(c, json_incref(json_object_get(j, "value")), NULL, true);
}

static void server_on_io(int fd, uint32_t events, void *data) {
        struct tool_server *srv = data;
        struct tools *t = srv->scope->owner;
        bool over = false;
        int r;

        if (fd == srv->in_fd) {
                r = pipe_flush(t, fd, srv->inbuf.data, srv->inbuf.len, &srv->in_off);
                if (r < 0) {
                        server_fail(srv, "the tool server closed its input");
                        return;
                }
                if (r == 1) {
                        srv->inbuf.len = srv->in_off = 0;
                        loop_mod_fd(t->loop, fd, 0);
                }
                return;
        }
        if (fd == srv->err_fd) {
                if (drain(fd, &srv->err, 0, true, &over) != 0)
                        close_watched(t, &srv->err_fd);
                return;
        }
        for (;;) {
                char buf[65536];
                ssize_t n = read(fd, buf, sizeof(buf));
                size_t start = 0;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n <= 0) {
                        server_fail(srv, "the tool server closed its output");
                        return;
                }
                for (size_t i = 0; i < (size_t)n; i++) {
                        if (buf[i] != '\n')
                                continue;
                        if (srv->line.len) {
                                text_append(&srv->line, buf + start, i - start);
                                server_line(srv, srv->line.data, srv->line.len);
                                srv->line.len = 0;
                        } else {
                                server_line(srv, buf + start, i - start);
                        }
                        start = i + 1;
                }
                if (srv->line.len + ((size_t)n - start) > TOOL_IO_MAX) {
                        server_fail(srv, "the tool server sent a reply over 1 MiB");
                        return;
                }
                text_append(&srv->line, buf + start, (size_t)n - start);
        }
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
        srv->command_key = strdup(d->command_key);
        srv->next = sc->servers;
        sc->servers = srv;
        if (!srv->command_key || spawn_tool(d, fds, &srv->pid) < 0) {
                server_free(srv);
                return NULL;
        }
        srv->in_fd = fds[0];
        srv->out_fd = fds[1];
        srv->err_fd = fds[2];
        srv->proc = proc_add(t, srv->pid, server_exited, srv);
        if (!srv->proc || loop_add_fd(t->loop, srv->in_fd, 0, server_on_io, srv) < 0 ||
            loop_add_fd(t->loop, srv->out_fd, EPOLLIN, server_on_io, srv) < 0 ||
            loop_add_fd(t->loop, srv->err_fd, EPOLLIN, server_on_io, srv) < 0) {
                if (!srv->proc)
                        kill(-srv->pid, SIGKILL);
                server_free(srv);
                return NULL;
        }
        log_info("tool server started for session %s: %s (pid %d)", sc->session ? sc->session->name : "-",
                 srv->command_key, (int)srv->pid);
        return srv;
}

static void server_on_timeout(void *data) {
        struct tool_call *c = data;
        struct tool_server *srv = c->server;
        char msg[160];

        snprintf(msg, sizeof(msg), "the tool server did not answer within the timeout of %g s; it was restarted",
                 c->def->timeout_s);
        call_finish(c, NULL, msg, true);
        /* A server that does not answer one call is taken to be stuck. */
        server_fail(srv, "the tool server was restarted after another call to it timed out");
}

/* A call to a server tool goes to the calling session's own server for
 * that definition's scope and command (started on first use). */
static int server_call(struct tool_call *c, struct tool_scope *def_scope) {
        struct tool_scope *sc = c->waiter;
        bool global = def_scope->session == NULL;
        struct tool_server *srv;
        char head[96];
        int n, e;

        for (srv = sc->servers; srv; srv = srv->next)
                if (srv->global == global && strcmp(srv->command_key, c->def->command_key) == 0)
                        break;
        if (!srv && !(srv = server_start(sc, c->def, global)))
                return -ECHILD;
        c->server = srv;
        c->server_id = ++srv->next_id;
        c->srv_next = srv->calls;
        if (srv->calls)
                srv->calls->srv_prev = c;
        srv->calls = c;
        /* {"id":N,"tool":"NAME","args":ARGS}: NAME is a syntactic R name,
         * which needs no escaping. */
        n = snprintf(head, sizeof(head), "{\"id\":%llu,\"tool\":\"", (unsigned long long)c->server_id);
        if (text_append(&srv->inbuf, head, (size_t)n) < 0 ||
            text_append(&srv->inbuf, c->def->name, strlen(c->def->name)) < 0 ||
            text_append(&srv->inbuf, "\",\"args\":", 9) < 0 ||
            text_append(&srv->inbuf, c->args_text, c->args_len - 1 /* its newline */) < 0 ||
            text_append(&srv->inbuf, "}\n", 2) < 0)
                return -ENOMEM;
        call_new_timer(c, server_on_timeout);
        if (!c->timer)
                return -ENOMEM;
        e = pipe_flush(c->owner, srv->in_fd, srv->inbuf.data, srv->inbuf.len, &srv->in_off);
        if (e == 1)
                srv->inbuf.len = srv->in_off = 0;
        if (e < 0) {
                /* It died: fail this call and the others; the next starts anew. */
                server_fail(srv, "the tool server closed its input");
                return 1; /* finished already */
        }
        return 0;
}

/* ---- checking and dispatching a call -------------------------------------- */

static const char *json_kind(const json_t *v) {
        switch (json_typeof(v)) {
        case JSON_OBJECT: return "an object";
        case JSON_ARRAY: return "an array";
        case JSON_STRING: return "a string";
        case JSON_INTEGER: return "an integer";
        case JSON_REAL: return "a number";
        case JSON_TRUE:
        case JSON_FALSE: return "a logical";
        default: return "null";
        }
}

static bool is_integral(const json_t *v) {
        return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
}

static bool scalar_ok(const json_t *v, enum arg_type type) {
        if (json_is_null(v))
                return true; /* NA */
        switch (type) {
        case T_CHARACTER: return json_is_string(v);
        case T_NUMERIC: return json_is_number(v);
        case T_INTEGER: return is_integral(v);
        case T_LOGICAL: return json_is_boolean(v);
        default: return false;
        }
}

/* Does v have the JSON form jsonlite gives an R value of type (with
 * auto_unbox: a length-one vector is a scalar, NA is null)? */
static bool type_ok(const json_t *v, enum arg_type type) {
        size_t i;
        json_t *x;

        switch (type) {
        case T_ANY: return true;
        case T_LIST: return json_is_object(v) || json_is_array(v);
        case T_DATA_FRAME:
                if (!json_is_array(v))
                        return false;
                json_array_foreach(v, i, x) if (!json_is_object(x)) return false;
                return true;
        default:
                if (!json_is_array(v))
                        return scalar_ok(v, type);
                json_array_foreach(v, i, x) if (!scalar_ok(x, type)) return false;
                return true;
        }
}

/* Missing, extra or mistyped arguments: a message, or NULL when args fit. */
static char *check_args(const struct tool_def *d, json_t *args) {
        const char *key;
        json_t *v;
        char *msg = NULL;

        for (size_t i = 0; i < d->n_args; i++)
                if (!json_object_get(args, d->arg_names[i])) {
                        if (asprintf(&msg, "%s(): argument \"%s\" is missing", d->name, d->arg_names[i]) < 0)
                                msg = NULL;
                        return msg ? msg : strdup("missing argument");
                }
        json_object_foreach(args, key, v) {
                size_t i;
                for (i = 0; i < d->n_args; i++)
                        if (strcmp(key, d->arg_names[i]) == 0)
                                break;
                if (i == d->n_args) {
                        if (asprintf(&msg, "%s(): unknown argument \"%.64s\"", d->name, key) < 0)
                                msg = NULL;
                        return msg ? msg : strdup("unknown argument");
                }
                if (!type_ok(v, d->arg_types[i])) {
                        if (asprintf(&msg, "%s(): argument \"%s\" must be %s (got %s%s)", d->name, key,
                                     type_names[d->arg_types[i]], json_is_array(v) ? "an array" : json_kind(v),
                                     json_is_array(v) ? " with other elements" : "") < 0)
                                msg = NULL;
                        return msg ? msg : strdup("mistyped argument");
                }
        }
        return NULL;
}

/* A call refused before it started: answered at once; logged if it is
 * one of the run's first AUDIT_REFUSED_FULL refusals, else counted. */
static void refuse(struct tool_call *c, const char *error) {
        struct tool_scope *sc = c->waiter;

        if (sc && ++sc->refused > AUDIT_REFUSED_FULL) {
                sc->refused_unlogged++;
                c->quiet = true;
        }
        call_finish(c, NULL, error, true);
}

int tools_handle_call(struct tools *t, struct session *s, json_t *frame, uint64_t seq, unsigned calls_before,
                      const char **why) {
        json_t *jseq = json_object_get(frame, "seq"), *jid = json_object_get(frame, "id");
        json_t *jtool = json_object_get(frame, "tool"), *args = json_object_get(frame, "args");
        struct tool_scope *sc = tools_session_scope(t, s);
        struct tool_entry *e;
        struct tool_call *c;
        const char *key, *name;
        json_t *v;
        char *text, msg[256];
        int r;

        /* The shape: a worker that sends anything else is broken or hostile. */
        json_object_foreach(frame, key, v) if (strcmp(key, "type") && strcmp(key, "seq") && strcmp(key, "id") &&
                                               strcmp(key, "tool") && strcmp(key, "args")) {
                *why = "tool_call with an unknown field";
                return -EBADMSG;
        }
        if (!json_is_integer(jseq) || (uint64_t)json_integer_value(jseq) != seq || !json_is_integer(jid) ||
            json_integer_value(jid) <= 0 || !json_is_string(jtool) || json_string_length(jtool) > 256 ||
            !json_is_object(args)) {
                *why = "malformed tool_call";
                return -EBADMSG;
        }
        if (!sc)
                return -ENOMEM;
        /* Ids are fresh within a run: a replayed id could be confused with
         * an earlier reply. */
        if (sc->call_seq != seq) {
                sc->call_seq = seq;
                sc->last_id = 0;
                sc->refused = sc->refused_unlogged = 0;
        }
        if (json_integer_value(jid) <= sc->last_id) {
                *why = "tool_call id reused";
                return -EBADMSG;
        }
        sc->last_id = json_integer_value(jid);
        /* A new call while one is in flight: the worker gave up on the old
         * one (its code caught an interrupt); no reply goes to it. */
        if (sc->pending)
                call_finish(sc->pending, NULL, "abandoned by the worker", false);

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->owner = t;
        c->waiter = sc;
        c->id = json_integer_value(jid);
        c->start_ns = now_ns();
        c->in_fd = c->out_fd = c->err_fd = -1;
        name = json_string_value(jtool);
        e = visible_entry(sc, name);
        if (e)
                c->def = def_ref(e->def);
        text = json_dumps(args, JSON_COMPACT);
        if (text) {
                size_t n = strlen(text);
                c->args_text = realloc(text, n + 2);
                if (!c->args_text) {
                        free(text);
                } else {
                        c->args_text[n] = '\n';
                        c->args_text[n + 1] = '\0';
                        c->args_len = n + 1;
                }
        }
        if (!c->args_text) {
                refuse(c, "out of memory");
                return 0;
        }
        if (!e) {
                /* Cut anywhere; the message is cleaned where it is sent. */
                snprintf(msg, sizeof(msg), "unknown tool \"%s\"", name);
                /* Audit it under the name asked for. */
                c->def = calloc(1, sizeof(*c->def));
                if (c->def) {
                        c->def->refs = 1;
                        c->def->name = strdup(name);
                        if (!c->def->name) {
                                free(c->def);
                                c->def = NULL;
                        }
                }
                refuse(c, msg);
                return 0;
        }
        if (calls_before >= t->opt->max_tool_calls) {
                snprintf(msg, sizeof(msg), "more than %u tool calls in one run (max_tool_calls)",
                         t->opt->max_tool_calls);
                refuse(c, msg);
                return 0;
        }
        if (c->args_len - 1 > TOOL_IO_MAX) {
                refuse(c, "the tool call's arguments are over 1 MiB");
                return 0;
        }
        text = check_args(c->def, args);
        if (text) {
                refuse(c, text);
                free(text);
                return 0;
        }
        sc->pending = c;
        if (c->def->server) {
                r = server_call(c, e->scope);
                if (r == 1)
                        return 0;
        } else {
                r = exec_start(c);
        }
        if (r < 0) {
                snprintf(msg, sizeof(msg), "the tool could not be started: %s", strerror(-r));
                call_finish(c, NULL, msg, true);
        }
        return 0;
}

/* ---- hooks -------------------------------------------------------------- */

void tools_run_ended(struct tools *t, struct session *s) {
        struct tool_scope *sc = s->tools;

        if (!sc)
                return;
        if (sc->pending)
                call_finish(sc->pending, NULL, "cancelled: the run ended", false);
        if (sc->dirty)
                scope_sync(sc);
}

void tools_run_summary(struct tools *t, struct session *s, uint64_t seq, unsigned dropped) {
        struct tool_scope *sc = s->tools;
        unsigned refused = 0, unlogged = 0;
        json_t *ev;

        (void)t;
        if (sc && sc->call_seq == seq) {
                refused = sc->refused;
                unlogged = sc->refused_unlogged;
                sc->refused = sc->refused_unlogged = 0;
        }
        if (!unlogged && !dropped)
                return;
        ev = json_pack("{s:s, s:I, s:i, s:i, s:i}", "event", "tool_calls_refused", "seq", (json_int_t)seq, "refused",
                       (int)refused, "not_logged", (int)unlogged, "dropped", (int)dropped);
        if (ev)
                session_audit(s, ev);
}

void tools_session_closed(struct tools *t, struct session *s) {
        struct tool_scope *sc = s->tools;

        if (!sc)
                return;
        if (sc->pending)
                call_finish(sc->pending, NULL, "cancelled: the session closed", false);
        /* Its servers, its own tools' and the global ones it called, serve
         * no other session. */
        while (sc->servers)
                server_fail(sc->servers, "the session closed");
        /* Handles still open on its files find nothing from now on. */
        while (sc->first)
                entry_free(sc->first);
        installed_clear(sc);
        text_free(&sc->errors);
        if (sc->prev)
                sc->prev->next = sc->next;
        else
                t->scopes = sc->next;
        if (sc->next)
                sc->next->prev = sc->prev;
        s->tools = NULL;
        free(sc);
}

int tools_new(struct loop *l, const struct options *o, struct tools **out) {
        struct tools *t = calloc(1, sizeof(*t));
        struct passwd *pw = getpwuid(getuid());

        if (!t)
                return -ENOMEM;
        t->loop = l;
        t->opt = o;
        t->global.owner = t;
        t->home = strdup(pw && pw->pw_dir && *pw->pw_dir ? pw->pw_dir : "/");
        if (!t->home) {
                free(t);
                return -ENOMEM;
        }
        *out = t;
        return 0;
}

void tools_free(struct tools *t) {
        if (!t)
                return;
        while (t->scopes)
                tools_session_closed(t, t->scopes->session);
        while (t->global.servers)
                server_fail(t->global.servers, "the daemon is shutting down");
        while (t->global.first)
                entry_free(t->global.first);
        text_free(&t->global.errors);
        /* Every group was killed; reap them so that none outlives us. */
        while (t->procs) {
                struct tool_proc *p = t->procs;
                t->procs = p->next;
                kill(-p->pid, SIGKILL);
                loop_unwatch_child(t->loop, p->pid); /* reaped here, not by the loop */
                waitpid(p->pid, NULL, 0);
                free(p);
        }
        free(t->home);
        free(t);
}
