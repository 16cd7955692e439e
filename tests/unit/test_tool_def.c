/* Unit tests of tool definitions (sessions/tool_def.c): the name rules, the
 * parsing of a NAME.json file (every field, every refusal), the process it
 * describes (argv, where execve looks, the clean environment), and the
 * check of a call's arguments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tool_def.h"

static struct tool_def *parse(const char *text, char *err, size_t n) {
        struct tool_def *d = NULL;
        int e = tool_def_parse("query_db", text, strlen(text), "/home/u", 42, &d, err, n);

        if (e < 0)
                CHECK(d == NULL && e == -EINVAL && err[0]);
        return d;
}

static bool refused_with(const char *text, const char *reason) {
        char err[512] = "";
        struct tool_def *d = parse(text, err, sizeof(err));

        if (d) {
                tool_def_unref(d);
                return false;
        }
        if (!strstr(err, reason)) {
                fprintf(stderr, "%s: got \"%s\", wanted \"%s\"\n", text, err, reason);
                return false;
        }
        return true;
}

/* refused_with() for a definition of /bin/cat with the given args (JSON
 * text) and, unless extra is NULL, one more member (`"NAME": VALUE`): the
 * shape most refusals share, with only the part under test spelled out. */
static bool refused_def(const char *args, const char *extra, const char *reason) {
        char text[1024];

        snprintf(text, sizeof(text), "{\"description\": \"x\", \"args\": %s, \"command\": [\"/bin/cat\"]%s%s}", args,
                 extra ? ", " : "", extra ? extra : "");
        return refused_with(text, reason);
}

static bool has_env(const struct tool_def *d, const char *entry) {
        for (char **e = d->envp; *e; e++)
                if (strcmp(*e, entry) == 0)
                        return true;
        return false;
}

static void test_names(void) {
        const char *why;
        char *name;

        CHECK(tool_name_valid("query_db", &why));
        CHECK(tool_name_valid(".hidden_tool", &why));
        CHECK(tool_name_valid("a.b_c9", &why));
        CHECK(!tool_name_valid("", &why) && why);
        CHECK(!tool_name_valid("9lives", &why) && strstr(why, "syntactic"));
        CHECK(!tool_name_valid(".9", &why));
        CHECK(!tool_name_valid("a-b", &why));
        CHECK(!tool_name_valid("if", &why) && strstr(why, "reserved"));
        CHECK(!tool_name_valid("..1", &why) && strstr(why, "reserved"));
        CHECK(!tool_name_valid("...", &why));
        CHECK(!tool_name_valid("NA_real_", &why));
        CHECK(!tool_name_valid("print", &why) && strstr(why, "base package"));
        CHECK(!tool_name_valid("paste0", &why));
        CHECK(!tool_name_valid(".securerfs_x", &why) && strstr(why, "runtime"));
        CHECK(!tool_name_valid("caf\xc3\xa9", &why));
        {
                char longname[102];
                memset(longname, 'a', 101);
                longname[101] = '\0';
                CHECK(!tool_name_valid(longname, &why));
                longname[100] = '\0';
                CHECK(tool_name_valid(longname, &why));
        }
        name = tool_filename_to_name("query_db.json", &why);
        CHECK(name && strcmp(name, "query_db") == 0);
        free(name);
        CHECK(!tool_filename_to_name("query_db.txt", &why) && strstr(why, "NAME.json"));
        CHECK(!tool_filename_to_name(".json", &why));
        CHECK(!tool_filename_to_name("if.json", &why));
}

static void test_parse(void) {
        char err[512];
        struct tool_def *d;

        d = parse("{\"description\": \"Query a table\", \"args\": {\"table\": \"character\", \"limit\": \"numeric\","
                  " \"any\": \"\"}, \"command\": [\"/usr/bin/python3\", \"/srv/q.py\"], \"mode\": \"exec\","
                  " \"timeout\": 2.5}",
                  err, sizeof(err));
        CHECK(d != NULL);
        if (d) {
                CHECK(strcmp(d->name, "query_db") == 0 && strcmp(d->description, "Query a table") == 0);
                CHECK(d->n_args == 3 && strcmp(d->arg_names[0], "table") == 0 && d->arg_types[0] == TOOL_CHARACTER &&
                      strcmp(d->arg_names[1], "limit") == 0 && d->arg_types[1] == TOOL_NUMERIC &&
                      d->arg_types[2] == TOOL_ANY);
                CHECK(json_object_size(d->args_json) == 3 &&
                      strcmp(json_string_value(json_object_get(d->args_json, "limit")), "numeric") == 0);
                CHECK(!d->server && d->timeout_s == 2.5 && d->gen == 42 && d->refs == 1);
                CHECK(strcmp(d->argv[0], "/usr/bin/python3") == 0 && strcmp(d->argv[1], "/srv/q.py") == 0 &&
                      !d->argv[2]);
                /* A command with a slash is run as it is. */
                CHECK(strcmp(d->exec_paths[0], "/usr/bin/python3") == 0 && !d->exec_paths[1]);
                CHECK(strcmp(d->command_key, "[\"/usr/bin/python3\",\"/srv/q.py\"]") == 0);
                /* A clean environment: nothing of the daemon's. */
                CHECK(has_env(d, "PATH=/usr/bin:/bin") && has_env(d, "LANG=C.UTF-8") && has_env(d, "HOME=/home/u") &&
                      !d->envp[3]);
                CHECK(tool_def_ref(d) == d && d->refs == 2);
                tool_def_unref(d);
                tool_def_unref(d);
        }
        /* A bare program is looked for in the definition's own PATH; env
         * adds to the environment and may override PATH and HOME. */
        d = parse("{\"description\": \"\", \"args\": {}, \"command\": [\"cat\"], \"mode\": \"server\","
                  " \"env\": {\"PATH\": \"/opt/bin::/bin\", \"HOME\": \"/srv\", \"DB\": \"x=y\"}}",
                  err, sizeof(err));
        CHECK(d != NULL);
        if (d) {
                CHECK(d->server && d->timeout_s == 10 && d->n_args == 0);
                CHECK(strcmp(d->exec_paths[0], "/opt/bin/cat") == 0 && strcmp(d->exec_paths[1], "./cat") == 0 &&
                      strcmp(d->exec_paths[2], "/bin/cat") == 0 && !d->exec_paths[3]);
                CHECK(has_env(d, "PATH=/opt/bin::/bin") && has_env(d, "HOME=/srv") && has_env(d, "DB=x=y") &&
                      has_env(d, "LANG=C.UTF-8"));
                CHECK(d->memory_bytes == -1);
                tool_def_unref(d);
        }
        /* memory: the process's address space; a server of its own. */
        d = parse("{\"description\": \"\", \"args\": {}, \"command\": [\"/bin/cat\"], \"memory\": 1073741824}", err,
                  sizeof(err));
        CHECK(d != NULL);
        if (d) {
                CHECK(d->memory_bytes == 1073741824LL);
                CHECK(strcmp(d->command_key, "[[\"/bin/cat\"],1073741824]") == 0);
                tool_def_unref(d);
        }
}

static void test_refusals(void) {
        CHECK(refused_with("", "not JSON"));
        CHECK(refused_with("{\"description\": \"x\", \"args\": {}", "not JSON"));
        CHECK(refused_with("[1]", "a JSON object"));
        CHECK(refused_with("{\"description\": \"x\", \"description\": \"y\", \"args\": {}, \"command\": [\"/bin/cat\"]}",
                           "not JSON"));
        CHECK(refused_def("{}", "\"comand\": 1", "unknown field \"comand\""));
        CHECK(refused_with("{\"args\": {}, \"command\": [\"/bin/cat\"]}", "missing field \"description\""));
        CHECK(refused_with("{\"description\": \"x\", \"command\": [\"/bin/cat\"]}", "missing field \"args\""));
        CHECK(refused_with("{\"description\": \"x\", \"args\": {}}", "missing field \"command\""));
        CHECK(refused_with("{\"description\": 1, \"args\": {}, \"command\": [\"/bin/cat\"]}", "\"description\""));
        CHECK(refused_with("{\"description\": \"a\\u0000b\", \"args\": {}, \"command\": [\"/bin/cat\"]}",
                           "not JSON"));
        CHECK(refused_def("[]", NULL, "\"args\""));
        CHECK(refused_with("{\"description\": \"x\", \"args\": {}, \"command\": []}", "non-empty array"));
        CHECK(refused_with("{\"description\": \"x\", \"args\": {}, \"command\": \"/bin/cat\"}", "non-empty array"));
        CHECK(refused_with("{\"description\": \"x\", \"args\": {}, \"command\": [\"\"]}", "not a program"));
        CHECK(refused_with("{\"description\": \"x\", \"args\": {}, \"command\": [\"/bin/cat\", 1]}", "element 1"));
        CHECK(refused_def("{}", "\"mode\": \"daemon\"", "\"mode\""));
        CHECK(refused_def("{}", "\"timeout\": 0", "\"timeout\""));
        CHECK(refused_def("{}", "\"timeout\": 3601", "\"timeout\""));
        CHECK(refused_def("{}", "\"timeout\": \"5\"", "\"timeout\""));
        CHECK(refused_def("{}", "\"memory\": 1000", "\"memory\""));
        CHECK(refused_def("{}", "\"memory\": 1.5e9", "\"memory\""));
        CHECK(refused_def("{}", "\"memory\": \"1G\"", "\"memory\""));
        CHECK(refused_def("{}", "\"env\": []", "\"env\""));
        CHECK(refused_def("{}", "\"env\": {\"A=B\": \"c\"}", "bad entry \"A=B\""));
        CHECK(refused_def("{}", "\"env\": {\"\": \"c\"}", "bad entry"));
        CHECK(refused_def("{}", "\"env\": {\"A\": 1}", "bad entry \"A\""));
        CHECK(refused_def("{\"if\": \"character\"}", NULL, "argument \"if\""));
        CHECK(refused_def("{\"a\": \"string\"}", NULL, "unknown type \"string\""));
        CHECK(refused_def("{\"a\": 1}", NULL, "(not a string)"));
}

static bool args_fit(const struct tool_def *d, const char *args, const char *reason) {
        json_t *a = json_loads(args, 0, NULL);
        char msg[512] = "";
        int e = tool_def_check_args(d, a, msg, sizeof(msg));

        json_decref(a);
        if (e == 0)
                return reason == NULL;
        if (!reason || !strstr(msg, reason)) {
                fprintf(stderr, "%s: got \"%s\", wanted \"%s\"\n", args, msg, reason ? reason : "(fits)");
                return false;
        }
        return e == -EINVAL;
}

/* The arguments that fit test_args's definition, every type once. */
static const char all_fit[] = "{\"s\": \"a\", \"n\": 1, \"i\": 2, \"b\": true, \"l\": {}, \"df\": [], \"x\": 1}";

/* args_fit() for all_fit with changes (a JSON object) laid over it: one
 * argument wrong at a time, the others as they fit. */
static bool fit_changed(const struct tool_def *d, const char *changes, const char *reason) {
        json_t *a = json_loads(all_fit, 0, NULL), *c = json_loads(changes, 0, NULL);
        char *text;
        bool fits;

        if (!a || !c || json_object_update(a, c) < 0 || !(text = json_dumps(a, 0))) {
                json_decref(a);
                json_decref(c);
                return false;
        }
        fits = args_fit(d, text, reason);
        free(text);
        json_decref(a);
        json_decref(c);
        return fits;
}

static void test_args(void) {
        char err[512];
        struct tool_def *d = parse("{\"description\": \"x\", \"command\": [\"/bin/cat\"], \"args\": {"
                                   "\"s\": \"character\", \"n\": \"numeric\", \"i\": \"integer\", \"b\": \"logical\","
                                   " \"l\": \"list\", \"df\": \"data.frame\", \"x\": \"\"}}",
                                   err, sizeof(err));
        static const char full[] =
                "{\"s\": \"a\", \"n\": 1.5, \"i\": 2, \"b\": true, \"l\": {\"k\": 1}, \"df\": [{\"a\": 1}], \"x\": null}";

        CHECK(d != NULL);
        if (!d)
                return;
        CHECK(args_fit(d, full, NULL));
        /* Vectors, NA (null), whole doubles as integers, lists as arrays. */
        CHECK(args_fit(d, "{\"s\": [\"a\", null], \"n\": [1, 2.5], \"i\": [2.0, null], \"b\": [false, null], "
                          "\"l\": [1, \"a\"], \"df\": [], \"x\": [[1]]}",
                       NULL));
        CHECK(args_fit(d, "{\"n\": 1, \"i\": 2, \"b\": true, \"l\": {}, \"df\": [], \"x\": 1}",
                       "query_db(): argument \"s\" is missing"));
        CHECK(fit_changed(d, "{\"y\": 2}", "unknown argument \"y\""));
        CHECK(fit_changed(d, "{\"s\": 1}", "argument \"s\" must be character (got an integer)"));
        CHECK(fit_changed(d, "{\"n\": \"1\"}", "argument \"n\" must be numeric (got a string)"));
        CHECK(fit_changed(d, "{\"i\": 2.5}", "argument \"i\" must be integer"));
        CHECK(fit_changed(d, "{\"b\": 1}", "argument \"b\" must be logical"));
        CHECK(fit_changed(d, "{\"l\": 3}", "argument \"l\" must be list"));
        CHECK(fit_changed(d, "{\"l\": [], \"df\": [1]}",
                          "argument \"df\" must be data.frame (got an array with other elements)"));
        CHECK(fit_changed(d, "{\"s\": [\"a\", 1], \"l\": []}", "got an array with other elements"));
        tool_def_unref(d);
        CHECK(strcmp(tool_arg_type_name(TOOL_DATA_FRAME), "data.frame") == 0 && !*tool_arg_type_name(TOOL_ANY));
}

int main(void) {
        test_names();
        test_parse();
        test_refusals();
        test_args();
        return check_summary("tool_def");
}
