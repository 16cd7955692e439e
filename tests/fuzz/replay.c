/* The replay program of the fuzz targets (tests/fuzz/fuzz_*.c): without
 * libFuzzer, it runs every file of the corpus directory given as argument
 * through the target's LLVMFuzzerTestOneInput(), as the normal test run
 * does (meson test, under ASan in scripts/test's sanitizer build).  A
 * target checks its properties itself (abort() on a violation). */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
        DIR *d;
        struct dirent *de;
        int n = 0, failed = 0;

        if (argc != 2 || !(d = opendir(argv[1]))) {
                fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
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
