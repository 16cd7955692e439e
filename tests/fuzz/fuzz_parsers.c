/* Fuzz target for the parsers of untrusted input that stand alone: the
 * frame codec (everything a worker sends goes through it first), the
 * `limits` JSON and `timeout` text a user writes, and the escapes of what
 * leaves the sandbox (common/escape.h: names the code made, shown and taken
 * back; text shown to people), with their properties checked (abort on a
 * violation).
 *
 * With libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -I. -Icommon tests/fuzz/fuzz_parsers.c common/frame.c common/options.c \
 *     -ljansson -lm -o fuzz_parsers && ./fuzz_parsers tests/fuzz/corpus
 * Without libFuzzer it is linked with tests/fuzz/replay.c, which runs every
 * file of the corpus directory given as argument through the same code
 * (meson test "fuzz-replay", under ASan in scripts/test's sanitizer
 * build). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "frame.h"
#include "options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What escape.h promises, for any input. */
static void fuzz_escapes(const uint8_t *data, size_t size) {
        size_t len = size > 1024 ? 1024 : size, n;
        char in[1025], shown[1024 * 6 + 1], raw[1025], back[1024 * 4 + 1];
        double d;

        (void)parse_seconds_text((const char *)data, size, &d);
        /* Text: nothing a terminal obeys is left, whatever the flags. */
        for (unsigned flags = 0; flags < 4; flags++) {
                n = text_escape((const char *)data, len, shown, flags);
                if (n > len * TEXT_ESCAPE_GROWTH || text_needs_escape(shown, n, flags & ESCAPE_KEEP_LINES))
                        abort();
        }
        /* As a shown name from the host: accepted only if it is the shown
         * form of what it decodes to. */
        memcpy(in, data, len);
        in[len] = '\0';
        if (name_take(in, raw, sizeof(raw)) == 0) {
                name_show(raw, strlen(raw), back);
                if (strcmp(back, in) != 0)
                        abort();
        }
        if (path_take(in, raw, sizeof(raw)) == 0 && (path_show(raw, back, sizeof(back)) != 0 || strcmp(back, in) != 0))
                abort();
        /* As a name the code made (no NUL, no '/'): shown, then taken back
         * to the same bytes. */
        for (size_t i = 0; i < len; i++)
                in[i] = data[i] == 0 || data[i] == '/' ? 'x' : (char)data[i];
        n = name_show(in, len, back);
        if (n > len * NAME_SHOW_GROWTH || text_needs_escape(back, n, 0) || name_take(back, raw, sizeof(raw)) != 0 ||
            memcmp(raw, in, len) != 0 || raw[len] != '\0')
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct frame_reader r;
        struct limits base, out;
        struct options o;
        char err[256];
        json_t *m;
        size_t split = size ? data[0] % (size + 1) : 0;
        int e;

        /* The stream arrives in two pieces, cut at a data-chosen place. */
        frame_reader_init(&r, 1 << 16);
        frame_reader_feed(&r, data, split);
        while ((e = frame_reader_next(&r, &m)) == 1) {
                (void)frame_type(m);
                json_decref(m);
        }
        if (e == 0) {
                frame_reader_feed(&r, data + split, size - split);
                while (frame_reader_next(&r, &m) == 1) {
                        char *buf;
                        size_t len;
                        /* What was accepted must encode again. */
                        if (frame_encode(m, &buf, &len) == 0)
                                free(buf);
                        json_decref(m);
                }
        }
        frame_reader_free(&r);

        fuzz_escapes(data, size);

        options_init(&o);
        base = o.limits;
        (void)limits_parse_json((const char *)data, size, &base, &out, err, sizeof(err));
        options_free(&o);
        return 0;
}
