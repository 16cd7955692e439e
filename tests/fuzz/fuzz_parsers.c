/* Fuzz target for the parsers of untrusted input that stand alone: the
 * frame codec (everything a worker sends goes through it first) and the
 * `limits` JSON a user writes.
 *
 * With libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DFUZZING -D_GNU_SOURCE \
 *     -I. -Icommon tests/fuzz/fuzz_parsers.c common/frame.c common/options.c \
 *     -ljansson -lm -o fuzz_parsers && ./fuzz_parsers tests/fuzz/corpus
 * Without -DFUZZING this file is a replay program: it runs every file of the
 * corpus directory given as argument through the same code (meson test
 * "fuzz-replay", under ASan in scripts/test's sanitizer build). */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

        options_init(&o);
        base = o.limits;
        (void)limits_parse_json((const char *)data, size, &base, &out, err, sizeof(err));
        options_free(&o);
        return 0;
}

#ifndef FUZZING
int main(int argc, char **argv) {
        DIR *d;
        struct dirent *de;
        int n = 0, failed = 0;

        if (argc != 2 || !(d = opendir(argv[1]))) {
                fprintf(stderr, "usage: fuzz_parsers CORPUS_DIR\n");
                return 2;
        }
        while ((de = readdir(d))) {
                char path[4096];
                FILE *f;
                uint8_t *buf;
                long len;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);
                f = fopen(path, "rb");
                if (!f || fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
                        fprintf(stderr, "%s: %s\n", path, strerror(errno));
                        failed++;
                        if (f)
                                fclose(f);
                        continue;
                }
                buf = malloc((size_t)len + 1);
                if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
                        failed++;
                } else {
                        LLVMFuzzerTestOneInput(buf, (size_t)len);
                        n++;
                }
                free(buf);
                fclose(f);
        }
        closedir(d);
        printf("fuzz-replay: %d passed, %d failed\n", n, failed);
        return failed || n == 0;
}
#endif
