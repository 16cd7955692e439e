/* Fuzz target for the tool-definition parser and the argument check
 * (sessions/tool_def.c): anyone who may write a tools/ file writes its
 * input, and a worker writes the arguments.  The input is a definition, and,
 * after a line "---", the arguments of a call as JSON.  Checked for any
 * input (abort on a violation): a definition that parses describes a
 * process that can be started (a program, where to look for it, a clean
 * environment with PATH, LANG and HOME) and a function whose arguments are
 * valid names; a refusal says why; the argument check answers with a
 * message naming the tool, or accepts.
 *
 * With libFuzzer (from a build directory, for r_base_names.h):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. -I.. -I../common -I../sessions \
 *     ../tests/fuzz/fuzz_tool_def.c ../sessions/tool_def.c -ljansson -lm -o fuzz_tool_def
 *   ./fuzz_tool_def ../tests/fuzz/corpus_tool_def
 * Without libFuzzer it is linked with tests/fuzz/replay.c (meson test
 * "fuzz-tool-def"). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tool_def.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int env_has(const struct tool_def *d, const char *prefix) {
        for (char **e = d->envp; *e; e++)
                if (strncmp(*e, prefix, strlen(prefix)) == 0)
                        return 1;
        return 0;
}

static void check_def(const struct tool_def *d) {
        if (!d->argv || !d->argv[0] || !*d->argv[0] || !d->exec_paths || !d->exec_paths[0] || !d->command_key ||
            !env_has(d, "PATH=") || !env_has(d, "LANG=") || !env_has(d, "HOME=") || !d->description ||
            !(d->timeout_s > 0) || d->timeout_s > 3600 || json_object_size(d->args_json) != d->n_args)
                abort();
        /* Argument names are syntactic R names (base names allowed). */
        for (size_t i = 0; i < d->n_args; i++) {
                size_t n = strlen(d->arg_names[i]);
                if (n == 0 || n > 100 ||
                    strspn(d->arg_names[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._") != n ||
                    d->arg_types[i] >= TOOL_TYPE_COUNT)
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *text = (const char *)data, *sep = memmem(data, size, "\n---\n", 5);
        size_t len = sep ? (size_t)(sep - text) : size;
        struct tool_def *d = NULL;
        char err[512] = "", *name;
        const char *why;
        int e = tool_def_parse("fuzzed", text, len, "/home/fuzz", 1, &d, err, sizeof(err));

        if (e < 0 && (d || !err[0] || (e != -EINVAL && e != -ENOMEM)))
                abort();
        if (e == 0) {
                check_def(d);
                if (sep) {
                        json_t *args = json_loadb(sep + 5, size - len - 5, 0, NULL);
                        char msg[512] = "";

                        if (json_is_object(args) && tool_def_check_args(d, args, msg, sizeof(msg)) < 0 &&
                            strncmp(msg, "fuzzed(): ", 10) != 0)
                                abort();
                        json_decref(args);
                }
                tool_def_unref(d);
        }
        /* The input's first line as a tool file's name. */
        {
                const char *nl = memchr(text, '\n', size);
                char *fn = strndup(text, nl ? (size_t)(nl - text) : size);

                if (fn && (name = tool_filename_to_name(fn, &why))) {
                        if (!tool_name_valid(name, &why))
                                abort();
                        free(name);
                }
                free(fn);
        }
        return 0;
}
