/* Console capture and its frames (worker.h).
 *
 * R writes through WriteConsoleEx; the bytes are buffered and sent as
 * console frames when 8 KiB are pending, when 10 ms have passed since the
 * last frame (checked here and from R_PolledEvents, which Sys.sleep calls
 * every 20 ms), and always before the result.  While the value is formatted
 * stdout goes to capture.c instead.  Everything sent to the daemon must be
 * valid UTF-8 without NUL (the frame reader refuses anything else), and
 * console output can hold any bytes (rawToChar, latin1 files): each bad byte
 * becomes U+FFFD. */
#include "worker.h"

#include <string.h>

#include "clock.h"
#include "text.h"
#include "utf8.h"

#define CONSOLE_FRAME_MAX (64u << 10)      /* text of one console frame */
#define CONSOLE_FLUSH_BYTES (8u << 10)     /* send once this much is pending */
#define CONSOLE_FLUSH_NS (10 * 1000000ull) /* or once this long has passed */
#define CONSOLE_RUN_MAX (16u << 20)        /* a print loop cannot flood the daemon */

static const char console_truncated_marker[] = "\n... (console output truncated)\n";

static struct {
        bool open;           /* a run is under way: its output is kept */
        long long seq;       /* of that run */
        struct text pending; /* raw bytes as R wrote them, not yet sent */
        uint64_t last_send_ns;
        size_t run_bytes; /* accepted during this run */
        bool truncated;
} C;

static void send_pending(bool final) {
        static char text[CONSOLE_FRAME_MAX];

        while (C.pending.len > 0) {
                size_t used, n = utf8_clean(C.pending.data, C.pending.len, text, sizeof(text), &used, final);

                if (used == 0)
                        break; /* only the start of a character: wait for the rest */
                text_consume(&C.pending, used);
                channel_send(json_pack("{s:s, s:I, s:s%}", "type", "console", "seq", (json_int_t)C.seq, "text", text,
                                       n));
        }
        C.last_send_ns = now_ns();
}

void console_write(const char *buf, int len, int otype) {
        size_t n = len > 0 ? (size_t)len : 0;

        if (otype == 0 && capture_active()) {
                capture_write(buf, n);
                return;
        }
        /* Outside a run (start-up, formatting between runs) nobody reads it. */
        if (!C.open || C.truncated || n == 0)
                return;
        if (C.run_bytes + n > CONSOLE_RUN_MAX) {
                n = CONSOLE_RUN_MAX - C.run_bytes;
                C.truncated = true;
        }
        /* Out of memory: the output is dropped rather than the run failed. */
        (void)text_append(&C.pending, buf, n);
        C.run_bytes += n;
        if (C.truncated)
                (void)text_append(&C.pending, console_truncated_marker, sizeof(console_truncated_marker) - 1);
        /* cat("tick", i, "\n") is three writes: on time alone, send only at
         * the end of a line; console_flush_due() sends a partial line
         * later. */
        if (C.pending.len >= CONSOLE_FLUSH_BYTES ||
            (C.pending.len > 0 && C.pending.data[C.pending.len - 1] == '\n' &&
             now_ns() - C.last_send_ns >= CONSOLE_FLUSH_NS))
                send_pending(false);
}

/* readline() and scan(stdin()) see end of file: there is no terminal. */
int console_read(const char *prompt, unsigned char *buf, int len, int add_history) {
        return 0;
}

void console_show_message(const char *msg) {
        console_write(msg, (int)strlen(msg), 1);
        console_write("\n", 1, 1);
}

void console_nothing(void) {}

void console_run_start(long long seq) {
        C.open = true;
        C.seq = seq;
        text_clear(&C.pending);
        C.run_bytes = 0;
        C.truncated = false;
        C.last_send_ns = now_ns();
}

void console_flush(void) {
        if (C.pending.len > 0)
                send_pending(false);
}

void console_flush_due(void) {
        if (C.open && C.pending.len > 0 && now_ns() - C.last_send_ns >= CONSOLE_FLUSH_NS)
                send_pending(false);
}

void console_run_end(void) {
        send_pending(true);
        C.open = false;
}
