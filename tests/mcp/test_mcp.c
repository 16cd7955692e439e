/* Unit tests of securerfs-mcp's pure parts: the line reader, the envelope
 * check, base64, workspace paths, version negotiation, and the protocol
 * handling of a server without a mount. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/check.h"
#include "base64.h"
#include "jsonrpc.h"
#include "log.h"
#include "macros.h"
#include "server.h"
#include "tools.h"
#include "workspace.h"

static void test_line_reader(void) {
        struct line_reader r;
        const char *line;
        size_t len;

        line_reader_init(&r, 16);
        CHECK(line_reader_feed(&r, "ab", 2) == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_NONE);
        CHECK(line_reader_feed(&r, "c\r\nde\nf", 7) == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_OK && len == 3 && strcmp(line, "abc") == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_OK && len == 2 && strcmp(line, "de") == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_NONE);
        /* the unterminated last line counts at the end of input */
        CHECK(line_reader_next(&r, true, &line, &len) == LINE_OK && len == 1 && strcmp(line, "f") == 0);
        CHECK(line_reader_next(&r, true, &line, &len) == LINE_NONE);

        /* a line over the limit, in pieces: reported once with its size, the
         * next line intact, and the buffer never holds the long one */
        CHECK(line_reader_feed(&r, "0123456789", 10) == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_NONE);
        CHECK(line_reader_feed(&r, "0123456789", 10) == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_NONE);
        for (int i = 0; i < 1000; i++)
                CHECK(line_reader_feed(&r, "0123456789", 10) == 0);
        CHECK(r.cap <= 4096);
        CHECK(line_reader_feed(&r, "xy\nok\n", 6) == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_TOO_LONG && len == 10022);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_OK && strcmp(line, "ok") == 0);
        /* over the limit within one feed, newline included */
        CHECK(line_reader_feed(&r, "aaaaaaaaaaaaaaaaaaaa\nb\n", 23) == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_TOO_LONG && len == 20);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_OK && strcmp(line, "b") == 0);
        /* exactly the limit is fine */
        CHECK(line_reader_feed(&r, "0123456789abcdef\n", 17) == 0);
        CHECK(line_reader_next(&r, false, &line, &len) == LINE_OK && len == 16);
        /* a long line cut short by the end of input */
        CHECK(line_reader_feed(&r, "0123456789abcdefXYZ", 19) == 0);
        CHECK(line_reader_next(&r, true, &line, &len) == LINE_TOO_LONG && len == 19);
        line_reader_free(&r);
}

static int classify(const char *text, int *code) {
        json_t *m = json_loads(text, JSON_DECODE_ANY, NULL);
        struct rpc_message msg;
        const char *why;
        int k = rpc_classify(m, &msg, code, &why);
        json_decref(m);
        return k;
}

static void test_classify(void) {
        int code;

        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", &code) == RPC_REQUEST);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"x\",\"params\":{}}", &code) == RPC_REQUEST);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"method\":\"n\"}", &code) == RPC_NOTIFICATION);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", &code) == RPC_RESPONSE);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", &code) == RPC_BAD &&
              code == RPC_INVALID_REQUEST);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", &code) == RPC_BAD);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"ping\"}", &code) == RPC_BAD);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":7}", &code) == RPC_BAD && code == RPC_INVALID_REQUEST);
        CHECK(classify("{\"id\":1,\"method\":\"ping\"}", &code) == RPC_BAD);
        CHECK(classify("{\"jsonrpc\":2,\"id\":1,\"method\":\"ping\"}", &code) == RPC_BAD);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":[1]}", &code) == RPC_BAD &&
              code == RPC_INVALID_PARAMS);
        CHECK(classify("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":3}", &code) == RPC_BAD &&
              code == RPC_INVALID_REQUEST);
        CHECK(classify("[1]", &code) == RPC_BAD);
        CHECK(classify("\"x\"", &code) == RPC_BAD);
        CHECK(classify("{\"jsonrpc\":\"2.0\"}", &code) == RPC_BAD);
}

static void test_base64(void) {
        const char *samples[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
        const char *expect[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
        unsigned char all[256], *out;
        size_t n;

        for (size_t i = 0; i < 7; i++) {
                char *e = base64_encode((const unsigned char *)samples[i], strlen(samples[i]), &n);
                CHECK(e && strcmp(e, expect[i]) == 0 && n == strlen(expect[i]));
                CHECK(base64_decode(e, n, &out, &n) == 0 && n == strlen(samples[i]) && memcmp(out, samples[i], n) == 0);
                free(out);
                free(e);
        }
        for (int i = 0; i < 256; i++)
                all[i] = (unsigned char)i;
        {
                char *e = base64_encode(all, 256, &n);
                CHECK(base64_decode(e, n, &out, &n) == 0 && n == 256 && memcmp(out, all, 256) == 0);
                free(out);
                free(e);
        }
        CHECK(base64_decode("Zg=", 3, &out, &n) == -EINVAL);  /* length */
        CHECK(base64_decode("Zh==", 4, &out, &n) == -EINVAL); /* non-zero dropped bits */
        CHECK(base64_decode("Zm9=", 4, &out, &n) == -EINVAL);
        CHECK(base64_decode("Z===", 4, &out, &n) == -EINVAL);
        CHECK(base64_decode("Zm 9", 4, &out, &n) == -EINVAL);
        CHECK(base64_decode("=Zm9", 4, &out, &n) == -EINVAL);
        CHECK(base64_decode("Zg==Zg==", 8, &out, &n) == -EINVAL); /* padding inside */
        CHECK(base64_decode("AB=C", 4, &out, &n) == -EINVAL);
}

static void test_paths(void) {
        const char *why;
        const char *good[] = {"a", "a/b.csv", "./a", "a//b", "a/./b", "...", "..a", "a..", ".hidden", "d/"};
        const char *bad[] = {"", "/etc/passwd", "..", "../a", "a/..", "a/../b", "./..", ".", "./", "//"};
        char longname[300];

        for (size_t i = 0; i < ARRAY_SIZE(good); i++)
                CHECK(workspace_check_path(good[i], false, &why) == 0);
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                CHECK(workspace_check_path(bad[i], false, &why) == -EINVAL);
        CHECK(workspace_check_path("", true, &why) == 0);
        CHECK(workspace_check_path(".", true, &why) == 0);
        CHECK(workspace_check_path("..", true, &why) == -EINVAL);
        CHECK(workspace_check_path("/", true, &why) == -EINVAL);
        memset(longname, 'a', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        CHECK(workspace_check_path(longname, false, &why) == -EINVAL);
}

static void test_negotiate(void) {
        CHECK(strcmp(mcp_negotiate("2024-11-05")->name, "2024-11-05") == 0);
        CHECK(strcmp(mcp_negotiate("2025-03-26")->name, "2025-03-26") == 0);
        CHECK(strcmp(mcp_negotiate("2025-06-18")->name, "2025-06-18") == 0);
        CHECK(strcmp(mcp_negotiate("2025-11-25")->name, "2025-11-25") == 0);
        CHECK(strcmp(mcp_negotiate("2099-01-01")->name, "2025-11-25") == 0);
        CHECK(strcmp(mcp_negotiate("")->name, "2025-11-25") == 0);
        CHECK(mcp_negotiate("2025-03-26")->features & MCP_F_BATCH);
        CHECK(!(mcp_negotiate("2025-06-18")->features & MCP_F_BATCH));
}

static void test_utf8_cut(void) {
        const char *s = "a\xc3\xa9z"; /* a é z */
        CHECK(utf8_cut(s, 4, 10) == 4);
        CHECK(utf8_cut(s, 4, 3) == 3);
        CHECK(utf8_cut(s, 4, 2) == 1); /* never inside é */
        CHECK(utf8_cut(s, 4, 1) == 1);
}

/* The answers of a detached server to input, one JSON value per line. */
static json_t *answers(const char *input) {
        struct server *s = server_new_detached(1024);
        json_t *all = json_array();
        char *p, *nl;

        server_feed(s, input, strlen(input));
        server_feed(s, "", 0);
        p = s->out.buf ? s->out.buf + s->out.start : NULL;
        for (size_t left = s->out.len; p && left > 0; left -= (size_t)(nl - p) + 1, p = nl + 1) {
                nl = memchr(p, '\n', left);
                if (!nl)
                        break;
                json_array_append_new(all, json_loadb(p, (size_t)(nl - p), 0, NULL));
        }
        server_free_detached(s);
        return all;
}

static int error_code(json_t *m) {
        return (int)json_integer_value(json_object_get(json_object_get(m, "error"), "code"));
}

static void test_detached_server(void) {
        json_t *a;

        a = answers("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":"
                    "\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}\n"
                    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n"
                    "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}\n"
                    "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"execute_r_code\","
                    "\"arguments\":{\"code\":\"1\"}}}\n"
                    "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}\n"
                    "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"execute_r_code\","
                    "\"arguments\":{\"code\":1}}}\n");
        CHECK(json_array_size(a) == 5);
        CHECK(strcmp(json_string_value(
                             json_object_get(json_object_get(json_array_get(a, 0), "result"), "protocolVersion")),
                     "2025-06-18") == 0);
        /* a protocol error in the envelope or params is answered on arrival
         * (4); valid requests are served from the queue in order (2, 3, 5) */
        CHECK(json_integer_value(json_object_get(json_array_get(a, 1), "id")) == 4);
        CHECK(json_integer_value(json_object_get(json_array_get(a, 2), "id")) == 2);
        CHECK(json_integer_value(json_object_get(json_array_get(a, 3), "id")) == 3);
        CHECK(json_integer_value(json_object_get(json_array_get(a, 4), "id")) == 5);
        CHECK(json_array_size(json_object_get(json_object_get(json_array_get(a, 2), "result"), "tools")) == 5);
        for (size_t i = 0; i < json_array_size(a); i++) {
                json_t *m = json_array_get(a, i);
                json_int_t id = json_integer_value(json_object_get(m, "id"));
                if (id == 3)
                        CHECK(json_is_true(json_object_get(json_object_get(m, "result"), "isError")));
                if (id == 4 || id == 5)
                        CHECK(error_code(m) == RPC_INVALID_PARAMS);
        }
        json_decref(a);

        a = answers("not json\n"
                    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n"
                    "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
                    "[]\n");
        CHECK(json_array_size(a) == 5);
        CHECK(error_code(json_array_get(a, 0)) == RPC_PARSE_ERROR);
        CHECK(error_code(json_array_get(a, 1)) == RPC_INVALID_REQUEST); /* not initialized */
        CHECK(json_is_object(json_object_get(json_array_get(a, 2), "result")));
        CHECK(error_code(json_array_get(a, 3)) == RPC_INVALID_REQUEST); /* too long */
        CHECK(error_code(json_array_get(a, 4)) == RPC_INVALID_REQUEST); /* batch before initialize */
        json_decref(a);
}

int main(void) {
        log_max_level = LOG_ERR;
        test_line_reader();
        test_classify();
        test_base64();
        test_paths();
        test_negotiate();
        test_utf8_cut();
        test_detached_server();
        return check_summary("mcp");
}
