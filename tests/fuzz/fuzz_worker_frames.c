/* Fuzz target for the worker protocol's validator (sessions/protocol.c):
 * every frame from a worker passes it, and the worker is hostile.  The
 * input's first byte picks the worker's phase and the run's last tool_call
 * id; the rest goes through the frame codec (as from the socket) and each
 * frame it yields through protocol_check_worker_frame().  Checked for any
 * input (abort on a violation): a frame that passes is one its phase allows,
 * with exactly the fields and bounds the table names, the run's seq and a
 * fresh id, and a status that fits its error_kind.  Then the same input
 * through a reader that admits each frame by its type before parsing it
 * (frame_reader_admit): what passes keeps its type's bounds.
 *
 * With libFuzzer (from a build directory, for r_base_names.h):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I.. -I../common -I../sessions \
 *     ../tests/fuzz/fuzz_worker_frames.c ../sessions/protocol.c ../common/frame.c ../common/text.c \
 *     ../common/utf8.c ../common/options.c ../common/hostids.c -ljansson -lm -o fuzz_worker_frames
 *   ./fuzz_worker_frames ../tests/fuzz/corpus_worker_frames
 * Without libFuzzer it is linked with tests/fuzz/replay.c (meson test
 * "fuzz-worker-frames"). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The worker may send t in phase p (docs/protocol.md's table). */
static int allowed(enum worker_message t, enum worker_phase p) {
        switch (t) {
        case MSG_READY: return p == PHASE_STARTING;
        case MSG_ATTACHED: return p == PHASE_ATTACHING;
        case MSG_FATAL: return p == PHASE_STARTING || p == PHASE_WAITING || p == PHASE_ATTACHING;
        case MSG_SNAPSHOT_DONE: return p == PHASE_SNAPSHOT;
        case MSG_RESTORED: return p == PHASE_RESTORE;
        default: return p == PHASE_RUNNING;
        }
}

static size_t field_count(const json_t *m) { return json_object_size(m) - 1; /* "type" */ }

static void check_passed(const json_t *m, const struct protocol_context *c, const struct worker_frame *f) {
        if (!allowed(f->type, c->phase))
                abort();
        switch (f->type) {
        case MSG_READY:
                if (!f->u.ready.r_version || f->u.ready.reserved_bytes < 0 ||
                    f->u.ready.reserved_bytes > PROTOCOL_RESERVED_MAX || field_count(m) > 2)
                        abort();
                break;
        case MSG_ATTACHED:
                if (field_count(m) != 0)
                        abort();
                break;
        case MSG_FATAL:
                if (!f->u.fatal.error || field_count(m) != 1)
                        abort();
                break;
        case MSG_CONSOLE:
                if (!f->u.console.text || f->u.console.len > PROTOCOL_CONSOLE_TEXT_MAX || field_count(m) != 2 ||
                    json_integer_value(json_object_get(m, "seq")) != (json_int_t)c->seq)
                        abort();
                break;
        case MSG_TOOL_CALL:
                if (f->u.tool_call.id <= c->last_call_id || !f->u.tool_call.tool ||
                    strlen(f->u.tool_call.tool) > PROTOCOL_TOOL_NAME_MAX || !json_is_object(f->u.tool_call.args) ||
                    field_count(m) != 4)
                        abort();
                break;
        case MSG_RESULT:
                if (!f->u.result.output || !f->u.result.error || !f->u.result.value ||
                    !json_is_array(f->u.result.warnings) || f->u.result.limit >= LIMIT_COUNT ||
                    (f->u.result.status == WORKER_OK) != (f->u.result.kind == WORKER_KIND_NONE) ||
                    (f->u.result.status == WORKER_INTERRUPTED) != (f->u.result.kind == WORKER_KIND_INTERRUPTED) ||
                    field_count(m) > 10)
                        abort();
                break;
        case MSG_SNAPSHOT_DONE:
        case MSG_RESTORED:
                if (!json_is_array(f->u.state.notes) || json_array_size(f->u.state.notes) > 1000 ||
                    (f->type == MSG_SNAPSHOT_DONE) != json_is_array(f->u.state.packages) || field_count(m) > 3)
                        abort();
                break;
        case MSG_WORKER_COUNT: abort();
        }
}

static int admit(void *data, const char *type, size_t type_len, struct frame_bounds *b) {
        const struct protocol_context *c = data;
        const char *why = NULL;
        int e = protocol_admit_worker_frame(type, type_len, c->phase, b, &why);

        if (e < 0 && !why)
                abort();
        return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct protocol_context c = {.seq = 7};
        struct frame_reader r;
        json_t *m;

        if (size < 1)
                return 0;
        c.phase = (enum worker_phase)(data[0] % PHASE_COUNT);
        c.last_call_id = data[0] / PHASE_COUNT;
        frame_reader_init(&r, FRAME_MAX_BYTES);
        frame_reader_feed(&r, data + 1, size - 1);
        while (frame_reader_next(&r, &m) == 1) {
                struct worker_frame f;
                const char *why = NULL;

                if (protocol_check_worker_frame(m, &c, &f, &why) == 0)
                        check_passed(m, &c, &f);
                else if (!why)
                        abort();
                json_decref(m);
        }
        frame_reader_free(&r);

        /* Again with the bounds checked before each frame is parsed: what
         * comes out is a type allowed in the phase, within its bytes and
         * values; a tool_call's args text, when found, is its args. */
        frame_reader_init(&r, FRAME_MAX_BYTES);
        frame_reader_admit(&r, admit, &c);
        frame_reader_feed(&r, data + 1, size - 1);
        while (frame_reader_next(&r, &m) == 1) {
                struct frame_bounds b;
                const char *why = NULL, *type = frame_type(m), *text;
                size_t len;

                if (protocol_admit_worker_frame(type, strlen(type), c.phase, &b, &why) < 0 ||
                    r.last_payload > b.max_bytes || frame_json_values(r.last_text, r.last_payload) > b.max_values)
                        abort();
                if (strcmp(type, "tool_call") == 0 && json_is_object(json_object_get(m, "args")) &&
                    frame_member_text(r.last_text, r.last_payload, "args", &text, &len) == 0) {
                        json_t *a = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
                        if (!a || !json_equal(a, json_object_get(m, "args")))
                                abort();
                        json_decref(a);
                }
                json_decref(m);
        }
        frame_reader_free(&r);
        return 0;
}
