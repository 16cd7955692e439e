/* Unit tests of the worker protocol's table and its one validator
 * (sessions/protocol.c): every message in every phase, the shape of each
 * (required fields, unknown ones refused, types, bounds), the run's seq and
 * tool_call ids, a result's status against its error_kind, and the daemon's
 * own frames against the same table. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "frame.h"
#include "protocol.h"

static struct protocol_context in_phase(enum worker_phase p) {
        return (struct protocol_context){.phase = p, .seq = 7, .last_call_id = 3};
}

/* The frame last checked: *f points into it until the next check. */
static json_t *last;

/* Check the frame text j in context c: the validator's return value, and
 * *f filled when it passed. */
static int check(const char *j, struct protocol_context c, struct worker_frame *f) {
        json_error_t err;
        struct worker_frame dummy;
        const char *why = NULL;
        int e;

        json_decref(last);
        last = json_loads(j, JSON_REJECT_DUPLICATES, &err);
        if (!last) {
                fprintf(stderr, "bad test JSON: %s: %s\n", j, err.text);
                return 1;
        }
        e = protocol_check_worker_frame(last, &c, f ? f : &dummy, &why);
        if (e < 0 && !why)
                e = 2; /* a refusal must say why */
        return e;
}

static int ok(const char *j, enum worker_phase p) { return check(j, in_phase(p), NULL) == 0; }
static int refused(const char *j, enum worker_phase p) { return check(j, in_phase(p), NULL) == -EBADMSG; }

static const char *const sample[MSG_WORKER_COUNT] = {
        [MSG_READY] = "{\"type\":\"ready\",\"r_version\":\"4.2.2\",\"reserved_bytes\":0}",
        [MSG_ATTACHED] = "{\"type\":\"attached\"}",
        [MSG_FATAL] = "{\"type\":\"fatal\",\"error\":\"no jail\"}",
        [MSG_CONSOLE] = "{\"type\":\"console\",\"seq\":7,\"text\":\"hi\\n\"}",
        [MSG_TOOL_CALL] = "{\"type\":\"tool_call\",\"seq\":7,\"id\":4,\"tool\":\"q\",\"args\":{\"a\":1}}",
        [MSG_RESULT] = "{\"type\":\"result\",\"seq\":7,\"status\":\"ok\",\"output\":\"2\",\"value\":2,\"error\":\"\","
                       "\"warnings\":[]}",
        [MSG_SNAPSHOT_DONE] = "{\"type\":\"snapshot_done\",\"notes\":[\"con: not carried\"],\"packages\":[\"stats\"]}",
        [MSG_RESTORED] = "{\"type\":\"restored\",\"notes\":[],\"error\":\"cut short\"}",
};

/* Which message may come in which phase (docs/protocol.md's table). */
static const unsigned allowed[MSG_WORKER_COUNT] = {
        [MSG_READY] = 1u << PHASE_STARTING,
        [MSG_ATTACHED] = 1u << PHASE_ATTACHING,
        [MSG_FATAL] = 1u << PHASE_STARTING | 1u << PHASE_WAITING | 1u << PHASE_ATTACHING,
        [MSG_CONSOLE] = 1u << PHASE_RUNNING,
        [MSG_TOOL_CALL] = 1u << PHASE_RUNNING,
        [MSG_RESULT] = 1u << PHASE_RUNNING,
        [MSG_SNAPSHOT_DONE] = 1u << PHASE_SNAPSHOT,
        [MSG_RESTORED] = 1u << PHASE_RESTORE,
};

static void test_phases(void) {
        for (int t = 0; t < MSG_WORKER_COUNT; t++)
                for (int p = 0; p < PHASE_COUNT; p++) {
                        struct worker_frame f;
                        int e = check(sample[t], in_phase((enum worker_phase)p), &f);
                        if (allowed[t] & (1u << p))
                                CHECK(e == 0 && f.type == (enum worker_message)t);
                        else
                                CHECK(e == -EBADMSG);
                }
        CHECK(refused("{\"type\":\"exec\",\"seq\":7,\"code\":\"1\",\"limits\":{}}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"hello\"}", PHASE_STARTING));
}

/* The same policy for every message: a field it does not name is refused. */
static void test_unknown_fields(void) {
        for (int t = 0; t < MSG_WORKER_COUNT; t++) {
                char j[512];
                int p = 0;

                while (!(allowed[t] & (1u << p)))
                        p++;
                snprintf(j, sizeof(j), "%.*s,\"extra\":1}", (int)strlen(sample[t]) - 1, sample[t]);
                CHECK(refused(j, (enum worker_phase)p));
        }
}

static void test_ready(void) {
        struct worker_frame f;

        CHECK(check("{\"type\":\"ready\",\"r_version\":\"4.2.2\"}", in_phase(PHASE_STARTING), &f) == 0 &&
              f.u.ready.reserved_bytes == 0 && strcmp(f.u.ready.r_version, "4.2.2") == 0);
        CHECK(check("{\"type\":\"ready\",\"r_version\":\"4.2.2\",\"reserved_bytes\":140737488355328}",
                    in_phase(PHASE_STARTING), &f) == 0 &&
              f.u.ready.reserved_bytes == PROTOCOL_RESERVED_MAX);
        CHECK(refused("{\"type\":\"ready\",\"r_version\":\"4.2.2\",\"reserved_bytes\":140737488355329}",
                      PHASE_STARTING));
        CHECK(refused("{\"type\":\"ready\",\"r_version\":\"4.2.2\",\"reserved_bytes\":-1}", PHASE_STARTING));
        CHECK(refused("{\"type\":\"ready\",\"r_version\":\"4.2.2\",\"reserved_bytes\":1.5}", PHASE_STARTING));
        CHECK(refused("{\"type\":\"ready\"}", PHASE_STARTING));
        CHECK(refused("{\"type\":\"ready\",\"r_version\":4}", PHASE_STARTING));
        CHECK(refused("{\"type\":\"ready\",\"r_version\":"
                      "\"01234567890123456789012345678901234567890123456789012345678901234\"}",
                      PHASE_STARTING));
}

static void test_fatal_console(void) {
        struct worker_frame f;
        size_t n = 65536 + 64;
        char *big = malloc(n + 64);

        CHECK(check(sample[MSG_FATAL], in_phase(PHASE_WAITING), &f) == 0 && f.u.fatal.len == 7);
        CHECK(refused("{\"type\":\"fatal\"}", PHASE_STARTING));
        CHECK(refused("{\"type\":\"fatal\",\"error\":null}", PHASE_STARTING));
        CHECK(check(sample[MSG_CONSOLE], in_phase(PHASE_RUNNING), &f) == 0 && f.u.console.len == 3 &&
              memcmp(f.u.console.text, "hi\n", 3) == 0);
        CHECK(refused("{\"type\":\"console\",\"seq\":6,\"text\":\"old run\"}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"console\",\"seq\":\"7\",\"text\":\"x\"}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"console\",\"seq\":7}", PHASE_RUNNING));
        /* The bound: 64 KiB of text a frame. */
        for (size_t k = 0; k <= 1; k++) {
                int m = snprintf(big, n + 64, "{\"type\":\"console\",\"seq\":7,\"text\":\"");
                memset(big + m, 'x', 65536 + k);
                strcpy(big + m + 65536 + k, "\"}");
                CHECK(k == 0 ? ok(big, PHASE_RUNNING) : refused(big, PHASE_RUNNING));
        }
        free(big);
}

static void test_tool_call(void) {
        struct worker_frame f;
        char j[512];

        CHECK(check(sample[MSG_TOOL_CALL], in_phase(PHASE_RUNNING), &f) == 0 && f.u.tool_call.id == 4 &&
              strcmp(f.u.tool_call.tool, "q") == 0 && json_is_object(f.u.tool_call.args));
        /* Ids only grow within a run (the context's last one is 3). */
        CHECK(refused("{\"type\":\"tool_call\",\"seq\":7,\"id\":3,\"tool\":\"q\",\"args\":{}}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"tool_call\",\"seq\":7,\"id\":1,\"tool\":\"q\",\"args\":{}}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"tool_call\",\"seq\":7,\"id\":0,\"tool\":\"q\",\"args\":{}}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"tool_call\",\"seq\":7,\"id\":-5,\"tool\":\"q\",\"args\":{}}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"tool_call\",\"seq\":8,\"id\":4,\"tool\":\"q\",\"args\":{}}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"tool_call\",\"seq\":7,\"id\":4,\"tool\":\"q\",\"args\":[]}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"tool_call\",\"seq\":7,\"id\":4,\"tool\":1,\"args\":{}}", PHASE_RUNNING));
        CHECK(refused("{\"type\":\"tool_call\",\"seq\":7,\"id\":4,\"args\":{}}", PHASE_RUNNING));
        /* The tool's name: at most 256 bytes. */
        for (int k = 256; k <= 257; k++) {
                int m = snprintf(j, sizeof(j), "{\"type\":\"tool_call\",\"seq\":7,\"id\":9,\"tool\":\"");
                memset(j + m, 'a', (size_t)k);
                strcpy(j + m + k, "\",\"args\":{}}");
                CHECK(k == 256 ? ok(j, PHASE_RUNNING) : refused(j, PHASE_RUNNING));
        }
}

static void test_result(void) {
        static const char head[] = "{\"type\":\"result\",\"seq\":7,\"output\":\"\",\"value\":null,\"error\":\"e\","
                                   "\"warnings\":[\"w\"]";
        struct worker_frame f;
        char j[1024];

        CHECK(check(sample[MSG_RESULT], in_phase(PHASE_RUNNING), &f) == 0 && f.u.result.status == WORKER_OK &&
              f.u.result.kind == WORKER_KIND_NONE && f.u.result.limit == -1 && !f.u.result.value_note &&
              json_integer_value(f.u.result.value) == 2);
#define RESULT(rest) (snprintf(j, sizeof(j), "%s%s}", head, rest), j)
        /* The status and the kind agree. */
        CHECK(refused(RESULT(",\"status\":\"ok\",\"error_kind\":\"runtime\""), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"error\""), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"error\",\"error_kind\":\"interrupted\""), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"interrupted\",\"error_kind\":\"runtime\""), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"interrupted\""), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"error\",\"error_kind\":\"timeout\""), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"error\",\"error_kind\":\"\""), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"crashed\",\"error_kind\":\"runtime\""), PHASE_RUNNING));
        CHECK(check(RESULT(",\"status\":\"error\",\"error_kind\":\"syntax\""), in_phase(PHASE_RUNNING), &f) == 0 &&
              f.u.result.status == WORKER_ERROR && f.u.result.kind == WORKER_KIND_SYNTAX);
        CHECK(check(RESULT(",\"status\":\"error\",\"error_kind\":\"tool\""), in_phase(PHASE_RUNNING), &f) == 0 &&
              f.u.result.kind == WORKER_KIND_TOOL);
        CHECK(check(RESULT(",\"status\":\"interrupted\",\"error_kind\":\"interrupted\""), in_phase(PHASE_RUNNING),
                    &f) == 0 &&
              f.u.result.status == WORKER_INTERRUPTED && f.u.result.kind == WORKER_KIND_INTERRUPTED);
        CHECK(check(RESULT(",\"status\":\"error\",\"error_kind\":\"runtime\",\"limit\":\"stack\",\"value_note\":\"n\""),
                    in_phase(PHASE_RUNNING), &f) == 0 &&
              f.u.result.limit == LIMIT_STACK && strcmp(f.u.result.value_note, "n") == 0);
        CHECK(refused(RESULT(",\"status\":\"error\",\"error_kind\":\"runtime\",\"limit\":\"files\""), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"error\",\"error_kind\":\"runtime\",\"value_note\":3"), PHASE_RUNNING));
        /* Benchmark builds add worker_ns: known, so accepted. */
        CHECK(ok(RESULT(",\"status\":\"ok\",\"worker_ns\":12345"), PHASE_RUNNING));
        CHECK(refused(RESULT(",\"status\":\"ok\",\"worker_ns\":-1"), PHASE_RUNNING));
#undef RESULT
        CHECK(refused("{\"type\":\"result\",\"seq\":6,\"status\":\"ok\",\"output\":\"\",\"value\":1,\"error\":\"\","
                      "\"warnings\":[]}",
                      PHASE_RUNNING));
        CHECK(refused("{\"type\":\"result\",\"seq\":7,\"status\":\"ok\",\"output\":\"\",\"error\":\"\","
                      "\"warnings\":[]}",
                      PHASE_RUNNING));
        CHECK(refused("{\"type\":\"result\",\"seq\":7,\"status\":\"ok\",\"output\":\"\",\"value\":1,\"error\":\"\","
                      "\"warnings\":[1]}",
                      PHASE_RUNNING));
        CHECK(refused("{\"type\":\"result\",\"seq\":7,\"status\":\"ok\",\"output\":\"\",\"value\":1,\"error\":\"\","
                      "\"warnings\":\"w\"}",
                      PHASE_RUNNING));
        /* What tests/sandbox/hostile.c forges must pass: a well-formed
         * result is one, whoever wrote it. */
        CHECK(ok("{\"type\":\"result\",\"seq\":7,\"status\":\"ok\",\"output\":\"faked\",\"value\":\"faked\","
                 "\"error\":\"\",\"warnings\":[]}",
                 PHASE_RUNNING));
}

/* Warnings: at most 1000, each at most 16 KiB. */
static void test_result_bounds(void) {
        size_t n = 1001 * 4 + 256, m;
        char *j = malloc(n + (16 << 10) + 256);

        for (int count = 1000; count <= 1001; count++) {
                m = (size_t)snprintf(j, n, "{\"type\":\"result\",\"seq\":7,\"status\":\"ok\",\"output\":\"\","
                                           "\"value\":1,\"error\":\"\",\"warnings\":[");
                for (int i = 0; i < count; i++)
                        m += (size_t)sprintf(j + m, "%s\"\"", i ? "," : "");
                strcpy(j + m, "]}");
                CHECK(count == 1000 ? ok(j, PHASE_RUNNING) : refused(j, PHASE_RUNNING));
        }
        for (size_t len = 16 << 10; len <= (16 << 10) + 1; len++) {
                m = (size_t)sprintf(j, "{\"type\":\"result\",\"seq\":7,\"status\":\"ok\",\"output\":\"\","
                                       "\"value\":1,\"error\":\"\",\"warnings\":[\"");
                memset(j + m, 'w', len);
                strcpy(j + m + len, "\"]}");
                CHECK(len == 16 << 10 ? ok(j, PHASE_RUNNING) : refused(j, PHASE_RUNNING));
        }
        free(j);
}

/* The daemon's frames fit the table, in the phase it sends them. */
static void test_daemon_frames(void) {
        struct limits l = {{60, 1 << 20, -1, 5, 256, -1}};
        json_t *args = json_pack("{s:s}", "a", "character"), *value = json_pack("[i,i]", 1, 2);
        struct {
                json_t *m;
                enum worker_phase phase;
        } f[] = {
                {protocol_workspace(), PHASE_WAITING},
                {protocol_exec(3, "1+1", 3, &l), PHASE_IDLE},
                {protocol_interrupt(3), PHASE_RUNNING},
                {protocol_define_tool("q", args, "Query"), PHASE_IDLE},
                {protocol_remove_tool("q"), PHASE_IDLE},
                {protocol_snapshot(), PHASE_IDLE},
                {protocol_restore(true), PHASE_IDLE},
                {protocol_tool_result(5, value, NULL), PHASE_RUNNING},
                {protocol_tool_result(6, NULL, NULL), PHASE_RUNNING},
                {protocol_tool_result(7, NULL, "bad \xff byte"), PHASE_RUNNING},
                {protocol_warm(), PHASE_WAITING},
        };
        const char *why;

        for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
                char *buf;
                size_t len;

                CHECK(f[i].m && protocol_check_daemon_frame(f[i].m, f[i].phase, &why) == 0);
                CHECK(protocol_check_daemon_frame(f[i].m, PHASE_STARTING, &why) == -EBADMSG);
                CHECK(frame_encode(f[i].m, &buf, &len) == 0);
                free(buf);
        }
        /* warm goes only to a pooled worker, before its workspace. */
        CHECK(protocol_check_daemon_frame(f[10].m, PHASE_IDLE, &why) == -EBADMSG);
        CHECK(protocol_check_daemon_frame(f[10].m, PHASE_RUNNING, &why) == -EBADMSG);
        /* A tool's message is made valid UTF-8 (jansson refuses anything
         * else). */
        CHECK(strcmp(json_string_value(json_object_get(f[9].m, "error")), "bad \xef\xbf\xbd byte") == 0);
        CHECK(json_integer_value(json_object_get(json_object_get(f[1].m, "limits"), "cpu")) == 60);
        CHECK(json_is_null(json_object_get(f[8].m, "value")));
        for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
                json_decref(f[i].m);
        json_decref(args);
        json_decref(value);
}

int main(void) {
        test_phases();
        test_unknown_fields();
        test_ready();
        test_fatal_console();
        test_tool_call();
        test_result();
        test_result_bounds();
        test_daemon_frames();
        json_decref(last);
        return check_summary("protocol");
}
