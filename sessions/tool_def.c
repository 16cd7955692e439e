#include "tool_def.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_cleanup.h"
#include "macros.h"
#include "r_base_names.h"

#define TIMEOUT_DEFAULT_S 10.0
#define TIMEOUT_MAX_S 3600.0
/* Below this an R or Python program does not start. */
#define MEMORY_MIN_BYTES (64 << 20)

static const char *const type_names[TOOL_TYPE_COUNT] = {"", "character", "numeric", "integer", "logical", "list",
                                                        "data.frame"};

const char *tool_arg_type_name(enum tool_arg_type type) { return type_names[type]; }

/* ---- names ------------------------------------------------------------ */

static int cmp_name(const void *key, const void *elem) { return strcmp(key, *(const char *const *)elem); }

/* A syntactic R name (ASCII letters only) that is not a reserved word: the
 * rule for argument names, and the start of the one for tool names. */
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
        /* A letter, or a dot not followed by a digit, then letters, digits,
         * dots, underscores. */
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

bool tool_name_valid(const char *name, const char **why) {
        if (!syntactic_name(name, why))
                return false;
        if (bsearch(name, r_base_names, ARRAY_SIZE(r_base_names), sizeof(r_base_names[0]), cmp_name)) {
                *why = "the name of a function or object of R's base package, which the tool would hide";
                return false;
        }
        return true;
}

char *tool_filename_to_name(const char *filename, const char **why) {
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

/* ---- definitions -------------------------------------------------------- */

static void strv_free(char **v) {
        if (v)
                for (char **p = v; *p; p++)
                        free(*p);
        free(v);
}

void tool_def_unref(struct tool_def *d) {
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

struct tool_def *tool_def_ref(struct tool_def *d) {
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
                /* An empty entry is the working directory ("/" for a
                 * tool). */
                if (asprintf(&v[n], "%.*s/%s", len ? (int)len : 1, len ? p : ".", argv0) < 0) {
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

/* The shape of the definition's JSON: -EINVAL with err, or 0 with the
 * fields (borrowed from j) and the number of env entries. */
static int check_fields(json_t *j, json_t **args, json_t **cmd, json_t **mode, json_t **timeout, json_t **env,
                        json_t **memory, size_t *n_env, char *err, size_t errlen) {
        static const char *const known[] = {"description", "args", "command", "mode", "timeout", "env", "memory"};
        json_t *v, *desc;
        const char *key;
        size_t i;

        if (!json_is_object(j)) {
                snprintf(err, errlen, "a definition is a JSON object with description, args and command");
                return -EINVAL;
        }
        json_object_foreach(j, key, v) {
                for (i = 0; i < ARRAY_SIZE(known); i++)
                        if (strcmp(key, known[i]) == 0)
                                break;
                if (i == ARRAY_SIZE(known)) {
                        snprintf(err, errlen,
                                 "unknown field \"%.64s\" (known: description, args, command, mode, timeout, env, "
                                 "memory)",
                                 key);
                        return -EINVAL;
                }
        }
        desc = json_object_get(j, "description");
        *args = json_object_get(j, "args");
        *cmd = json_object_get(j, "command");
        *mode = json_object_get(j, "mode");
        *timeout = json_object_get(j, "timeout");
        *env = json_object_get(j, "env");
        *memory = json_object_get(j, "memory");
        if (!desc || !*args || !*cmd) {
                snprintf(err, errlen, "missing field \"%s\"", !desc ? "description" : !*args ? "args" : "command");
                return -EINVAL;
        }
        if (!json_is_string(desc) || has_nul(desc)) {
                snprintf(err, errlen, "\"description\" must be a string");
                return -EINVAL;
        }
        if (!json_is_object(*args)) {
                snprintf(err, errlen, "\"args\" must be an object of argument name to type ({} for none)");
                return -EINVAL;
        }
        if (!json_is_array(*cmd) || json_array_size(*cmd) == 0) {
                snprintf(err, errlen, "\"command\" must be a non-empty array of strings");
                return -EINVAL;
        }
        json_array_foreach(*cmd, i, v) if (!json_is_string(v) || has_nul(v) || (i == 0 && !*json_string_value(v))) {
                snprintf(err, errlen, "\"command\" must be a non-empty array of strings (element %zu is not%s)", i,
                         i == 0 ? " a program" : " a string");
                return -EINVAL;
        }
        if (*mode && (!json_is_string(*mode) ||
                      (strcmp(json_string_value(*mode), "exec") && strcmp(json_string_value(*mode), "server")))) {
                snprintf(err, errlen, "\"mode\" must be \"exec\" or \"server\"");
                return -EINVAL;
        }
        if (*timeout && (!json_is_number(*timeout) || !(json_number_value(*timeout) > 0) ||
                         json_number_value(*timeout) > TIMEOUT_MAX_S)) {
                snprintf(err, errlen, "\"timeout\" must be a number of seconds above 0, at most %g", TIMEOUT_MAX_S);
                return -EINVAL;
        }
        if (*memory && (!json_is_integer(*memory) || json_integer_value(*memory) < MEMORY_MIN_BYTES)) {
                snprintf(err, errlen, "\"memory\" must be a whole number of bytes, at least %d MiB", MEMORY_MIN_BYTES >> 20);
                return -EINVAL;
        }
        *n_env = 0;
        if (*env) {
                if (!json_is_object(*env)) {
                        snprintf(err, errlen, "\"env\" must be an object of strings");
                        return -EINVAL;
                }
                json_object_foreach(*env, key, v) {
                        if (!*key || strchr(key, '=') || !json_is_string(v) || has_nul(v)) {
                                snprintf(err, errlen, "\"env\" must be an object of strings (bad entry \"%.64s\")",
                                         key);
                                return -EINVAL;
                        }
                        (*n_env)++;
                }
        }
        return 0;
}

/* The arguments, in order: -EINVAL with err, -ENOMEM, or 0. */
static int parse_args(struct tool_def *d, json_t *args, char *err, size_t errlen) {
        const char *key;
        json_t *v;
        size_t i = 0;

        d->n_args = json_object_size(args);
        d->arg_names = calloc(d->n_args + 1, sizeof(char *));
        d->arg_types = calloc(d->n_args + 1, sizeof(enum tool_arg_type));
        d->args_json = json_object();
        if (!d->arg_names || !d->arg_types || !d->args_json)
                return -ENOMEM;
        json_object_foreach(args, key, v) {
                const char *why;
                int k;

                if (!syntactic_name(key, &why)) {
                        snprintf(err, errlen, "argument \"%.64s\": %s", key, why);
                        return -EINVAL;
                }
                for (k = 0; k < TOOL_TYPE_COUNT; k++)
                        if (json_is_string(v) && strcmp(json_string_value(v), type_names[k]) == 0)
                                break;
                if (k == TOOL_TYPE_COUNT) {
                        snprintf(err, errlen,
                                 "argument \"%s\": unknown type %s%.40s%s (known: character, numeric, integer, "
                                 "logical, list, data.frame, or \"\" for any)",
                                 key, json_is_string(v) ? "\"" : "",
                                 json_is_string(v) ? json_string_value(v) : "(not a string)",
                                 json_is_string(v) ? "\"" : "");
                        return -EINVAL;
                }
                if (!(d->arg_names[i] = strdup(key)) ||
                    json_object_set_new(d->args_json, key, json_string(type_names[k])) < 0)
                        return -ENOMEM;
                d->arg_types[i++] = (enum tool_arg_type)k;
        }
        return 0;
}

/* A clean environment (PATH, LANG, HOME) plus what the definition names. */
static int make_envp(struct tool_def *d, json_t *env, size_t n_env, const char *home) {
        const char *defaults[3][2] = {{"PATH", "/usr/bin:/bin"}, {"LANG", "C.UTF-8"}, {"HOME", home}};
        const char *key;
        json_t *v;
        size_t n = 0;

        d->envp = calloc(3 + n_env + 1, sizeof(char *));
        if (!d->envp)
                return -ENOMEM;
        for (size_t k = 0; k < 3; k++) {
                json_t *over = env ? json_object_get(env, defaults[k][0]) : NULL;
                if (asprintf(&d->envp[n], "%s=%s", defaults[k][0], over ? json_string_value(over) : defaults[k][1]) <
                    0) {
                        d->envp[n] = NULL;
                        return -ENOMEM;
                }
                n++;
        }
        if (env)
                json_object_foreach(env, key, v) {
                        if (!strcmp(key, "PATH") || !strcmp(key, "LANG") || !strcmp(key, "HOME"))
                                continue;
                        if (asprintf(&d->envp[n], "%s=%s", key, json_string_value(v)) < 0) {
                                d->envp[n] = NULL;
                                return -ENOMEM;
                        }
                        n++;
                }
        return 0;
}

int tool_def_parse(const char *name, const char *text, size_t len, const char *home, uint64_t gen,
                   struct tool_def **out, char *err, size_t errlen) {
        _cleanup_json_ json_t *j = NULL;
        struct tool_def *d;
        json_error_t jerr;
        json_t *args, *cmd, *mode, *timeout, *env, *memory, *key, *v;
        size_t i, n_env;
        int e;

        j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!j) {
                snprintf(err, errlen, "not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
                return -EINVAL;
        }
        e = check_fields(j, &args, &cmd, &mode, &timeout, &env, &memory, &n_env, err, errlen);
        if (e < 0)
                return e;
        d = calloc(1, sizeof(*d));
        if (!d) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        d->refs = 1;
        d->gen = gen;
        d->server = mode && strcmp(json_string_value(mode), "server") == 0;
        d->timeout_s = timeout ? json_number_value(timeout) : TIMEOUT_DEFAULT_S;
        d->memory_bytes = memory ? json_integer_value(memory) : -1;
        e = -ENOMEM;
        if (!(d->name = strdup(name)) ||
            !(d->description = strdup(json_string_value(json_object_get(j, "description")))))
                goto fail;
        if ((e = parse_args(d, args, err, errlen)) < 0)
                goto fail;
        e = -ENOMEM;
        d->argv = calloc(json_array_size(cmd) + 1, sizeof(char *));
        if (!d->argv)
                goto fail;
        json_array_foreach(cmd, i, v) if (!(d->argv[i] = strdup(json_string_value(v)))) goto fail;
        /* One server per command and address-space limit. */
        key = memory ? json_pack("[O, O]", cmd, memory) : json_incref(cmd);
        d->command_key = key ? json_dumps(key, JSON_COMPACT) : NULL;
        json_decref(key);
        if (!d->command_key || make_envp(d, env, n_env, home) < 0 || !(d->exec_paths = exec_paths(d->argv[0], d->envp)))
                goto fail;
        *out = d;
        return 0;
fail:
        if (e == -ENOMEM)
                snprintf(err, errlen, "out of memory");
        tool_def_unref(d);
        return e;
}

/* ---- a call's arguments ----------------------------------------------------- */

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

static bool scalar_ok(const json_t *v, enum tool_arg_type type) {
        if (json_is_null(v))
                return true; /* NA */
        switch (type) {
        case TOOL_CHARACTER: return json_is_string(v);
        case TOOL_NUMERIC: return json_is_number(v);
        case TOOL_INTEGER: return is_integral(v);
        case TOOL_LOGICAL: return json_is_boolean(v);
        default: return false;
        }
}

/* Does v have the JSON form jsonlite gives an R value of type (with
 * auto_unbox: a length-one vector is a scalar, NA is null)? */
static bool type_ok(const json_t *v, enum tool_arg_type type) {
        size_t i;
        json_t *x;

        switch (type) {
        case TOOL_ANY: return true;
        case TOOL_LIST: return json_is_object(v) || json_is_array(v);
        case TOOL_DATA_FRAME:
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

int tool_def_check_args(const struct tool_def *d, const json_t *args, char *msg, size_t n) {
        const char *key;
        json_t *v;

        for (size_t i = 0; i < d->n_args; i++)
                if (!json_object_get(args, d->arg_names[i])) {
                        snprintf(msg, n, "%s(): argument \"%s\" is missing", d->name, d->arg_names[i]);
                        return -EINVAL;
                }
        json_object_foreach((json_t *)args, key, v) {
                size_t i;
                for (i = 0; i < d->n_args; i++)
                        if (strcmp(key, d->arg_names[i]) == 0)
                                break;
                if (i == d->n_args) {
                        snprintf(msg, n, "%s(): unknown argument \"%.64s\"", d->name, key);
                        return -EINVAL;
                }
                if (!type_ok(v, d->arg_types[i])) {
                        snprintf(msg, n, "%s(): argument \"%s\" must be %s (got %s%s)", d->name, key,
                                 type_names[d->arg_types[i]], json_is_array(v) ? "an array" : json_kind(v),
                                 json_is_array(v) ? " with other elements" : "");
                        return -EINVAL;
                }
        }
        return 0;
}
