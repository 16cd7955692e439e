/* A tool's definition (DESIGN §3, docs/tools.md): the rules for tool and
 * argument names, the parsing and checking of a NAME.json file, and the
 * check of a call's arguments against it.  Pure: no I/O, no global state
 * (unit tests and a fuzz target call it directly, as an attacker's input:
 * anyone who can write a tools/ file writes it). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* Argument types, as R names them ("" for any). */
enum tool_arg_type {
        TOOL_ANY,
        TOOL_CHARACTER,
        TOOL_NUMERIC,
        TOOL_INTEGER,
        TOOL_LOGICAL,
        TOOL_LIST,
        TOOL_DATA_FRAME,
        TOOL_TYPE_COUNT
};

/* A parsed, accepted definition; immutable, shared (reference-counted) by
 * the calls using it. */
struct tool_def {
        unsigned refs;
        uint64_t gen; /* unique: tells a worker's copy from a newer one */
        char *name;
        char *description;
        size_t n_args;
        char **arg_names;
        enum tool_arg_type *arg_types;
        json_t *args_json;  /* {"name": "type", ...} as sent in define_tool */
        char **argv;        /* NULL-terminated */
        char **exec_paths;  /* where to look for argv[0], NULL-terminated */
        char **envp;        /* NULL-terminated: a clean environment plus the definition's env */
        char *command_key;  /* the command as compact JSON: servers are shared by it */
        bool server;        /* mode "server" (else "exec") */
        double timeout_s;
        long long memory_bytes; /* "memory": its process's RLIMIT_AS, or -1 */
};

/* Parse text[0..len) as the definition of tool name (a valid tool name):
 * a JSON object with description, args and command, and optionally mode,
 * timeout, env and memory, nothing else.  home is HOME in the tool's environment
 * unless env sets it; gen its generation.  0 with *out (one reference),
 * -EINVAL with the reason in err (a sentence for the .errors file), or
 * -ENOMEM. */
int tool_def_parse(const char *name, const char *text, size_t len, const char *home, uint64_t gen,
                   struct tool_def **out, char *err, size_t errlen);
struct tool_def *tool_def_ref(struct tool_def *d);
/* Accepts NULL. */
void tool_def_unref(struct tool_def *d);

/* Do a call's arguments fit d (every argument given, no other, each of the
 * JSON form jsonlite gives an R value of its type: a length-one vector as a
 * scalar, NA as null)?  0, or -EINVAL with a message naming the tool and
 * the argument in msg. */
int tool_def_check_args(const struct tool_def *d, const json_t *args, char *msg, size_t n);

/* Syntactic R name, not reserved, not a name of R's base package, not
 * starting with ".securerfs": the rule for tool names.  false with *why. */
bool tool_name_valid(const char *name, const char **why);
/* "NAME.json" -> NAME (malloc'ed) when NAME is a valid tool name; else NULL
 * with *why ("out of memory" included). */
char *tool_filename_to_name(const char *filename, const char **why);
/* The word of a type ("" for TOOL_ANY). */
const char *tool_arg_type_name(enum tool_arg_type type);
