/* Fuzz target for what securerfs-mcp reads from its client: the bytes of
 * stdin, through the line reader, the JSON parser, the envelope check and
 * every method's parameter checks, on a server without a mount (so every
 * tool call goes as far as it can without one).  Every answer must be one
 * line of valid JSON.
 *
 * With libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DFUZZING -D_GNU_SOURCE -Ibuild \
 *     -I. -Icommon -Imcp tests/mcp/fuzz_mcp.c mcp/[a-lo-z]*.c common/log.c common/utf8.c \
 *     -ljansson -lpthread -o fuzz_mcp && ./fuzz_mcp tests/mcp/corpus
 * Linked with tests/fuzz/replay.c instead, it replays the corpus directory
 * given as argument (meson test "mcp-fuzz-replay", under ASan in
 * scripts/test). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct server *s = server_new_detached(4096);
        size_t split = size ? data[0] % (size + 1) : 0;
        const char *p, *nl;
        size_t left;

        log_max_level = LOG_ERR;
        /* The stream arrives in two pieces, cut at a data-chosen place. */
        server_feed(s, (const char *)data, split);
        if (size > split)
                server_feed(s, (const char *)data + split, size - split);
        server_feed(s, "", 0);
        p = s->out.buf ? s->out.buf + s->out.start : NULL;
        for (left = s->out.len; p && left > 0; left -= (size_t)(nl - p) + 1, p = nl + 1) {
                json_t *m;
                nl = memchr(p, '\n', left);
                if (!nl)
                        abort(); /* every answer ends with its newline */
                m = json_loadb(p, (size_t)(nl - p), JSON_DECODE_ANY, NULL);
                if (!m)
                        abort(); /* and is JSON */
                json_decref(m);
        }
        server_free_detached(s);
        return 0;
}
