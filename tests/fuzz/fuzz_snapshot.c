/* Fuzz target for the snapshot container's parser (sessions/snapshot_file.c):
 * a snapshot file written into sessions/N/snapshot, or found in a state_dir,
 * comes from anywhere.  The input is the file; it is checked against a
 * 1 MiB workspace quota.  Checked for any input (abort on a violation): an
 * accepted file starts with the magic and version 1, has a metadata object
 * with the right format, and every record from its stream's start decodes,
 * the R record first and once, every path relative with no "." or ".."
 * component, every link's target inside the workspace, what the entries
 * take within the quota, and the end record exactly at the end.
 *
 * With libFuzzer (from a build directory):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I.. -I../common -I../sessions \
 *     ../tests/fuzz/fuzz_snapshot.c ../sessions/snapshot_file.c ../common/state_format.c -ljansson \
 *     -o fuzz_snapshot
 *   ./fuzz_snapshot ../tests/fuzz/corpus_snapshot
 * Without libFuzzer it is linked with tests/fuzz/replay.c (meson test
 * "fuzz-snapshot"). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snapshot_file.h"
#include "state_format.h"

#define QUOTA (1LL << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Walk the accepted file again, independently of the parser. */
static void check_accepted(const uint8_t *data, size_t size, const struct snapshot_info *info) {
        size_t off = (size_t)info->stream_off;
        uint64_t pages = 0, entries = 0;
        bool first = true;

        if (size < SNAPSHOT_HEADER || memcmp(data, SNAPSHOT_MAGIC, 8) || data[8] || data[9] || data[10] ||
            data[11] != 1 || !json_is_object(info->meta) ||
            strcmp(json_string_value(json_object_get(info->meta, "format")) ?: "", "securerfs-snapshot"))
                abort();
        for (;;) {
                struct state_record r;

                if (off + STATE_RECORD_HEADER > size || state_record_decode(data + off, &r) < 0)
                        abort();
                off += STATE_RECORD_HEADER;
                if (first != (r.kind == 'R'))
                        abort();
                first = false;
                if (r.kind == 'E')
                        break;
                if (r.path_len > size - off)
                        abort();
                if (r.kind != 'R') {
                        const char *p = (const char *)data + off;

                        if (state_path_check(p, r.path_len) < 0 || p[0] == '/')
                                abort();
                        entries++;
                }
                if (r.kind == 'L') {
                        char path[STATE_PATH_MAX + 1];

                        memcpy(path, data + off, r.path_len);
                        path[r.path_len] = '\0';
                        if (r.data_len > size - off - r.path_len ||
                            state_link_check(path, (const char *)data + off + r.path_len, (size_t)r.data_len) < 0 ||
                            data[off + r.path_len] == '/')
                                abort();
                }
                if (r.kind == 'F')
                        pages += (r.data_len + 4095) / 4096;
                else if (r.kind != 'R')
                        pages++;
                off += r.path_len;
                if (r.data_len > size - off)
                        abort();
                off += (size_t)r.data_len;
        }
        if (off != size || entries != info->entries || pages * 4096 > (uint64_t)QUOTA)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct snapshot_info info;
        char why[256] = "";
        int fd = memfd_create("fuzz", MFD_CLOEXEC), e;

        if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
                abort();
        e = snapshot_file_check(fd, (off_t)size, QUOTA, &info, why, sizeof(why));
        if (e == 0) {
                check_accepted(data, size, &info);
                json_decref(info.meta);
        } else if ((e != -EINVAL && e != -ENOSPC) || !why[0]) {
                abort(); /* every refusal says why; nothing else fails on a memfd */
        }
        close(fd);
        return 0;
}
