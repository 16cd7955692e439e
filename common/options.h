/* The daemon's options (-o key=value) and the per-session resource limits,
 * with their parsers.  Pure logic: unit-tested in tests/unit/test_options.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "hostids.h"

enum limit_kind { LIMIT_CPU, LIMIT_MEMORY, LIMIT_FSIZE, LIMIT_NPROC, LIMIT_NOFILE, LIMIT_STACK, LIMIT_COUNT };

/* Seconds (cpu), bytes (memory, fsize, stack) or counts; LIMIT_UNSET means
 * no limit (RLIM_INFINITY). */
#define LIMIT_UNSET (-1LL)
struct limits {
        long long v[LIMIT_COUNT];
};

extern const char *const limit_names[LIMIT_COUNT];

/* max_sessions' ceiling as an option: what the machine can really hold is
 * checked at start (fs/capacity.h); this only keeps the counts in range. */
#define OPTIONS_MAX_SESSIONS 1000000ULL

struct options {
        double timeout_s;          /* default per-run timeout; 0: none */
        double grace_s;            /* after an interrupt, before SIGKILL */
        unsigned pool;             /* idle workers kept ready */
        unsigned max_sessions;
        long long max_code_bytes;
        long long console_max_bytes;
        long long tmp_bytes;       /* size of each jail's /tmp */
        long long files_max_bytes; /* each session's workspace (/work, sessions/N/files/) */
        unsigned max_tool_calls;   /* tool calls in one run (-o max_tool_calls) */
        char *audit_log;           /* path or NULL */
        bool sandbox_none;         /* -o sandbox=none */
        bool allow_other;
        bool allow_exec;           /* -o allow_exec: workers may execve */
        char *r_libs;              /* colon-separated extra library dirs, or NULL */
        char *worker_path;         /* securerfs-worker, or NULL: next to us */
        struct limits limits;      /* defaults for new sessions */
        struct id_range id_range;  /* host uids/gids of a root daemon's sessions (-o id_range) */
        char *state_dir;           /* -o state_dir: sessions persist there; NULL: they do not */
        double checkpoint_interval_s; /* a session is checkpointed at most this often (-o checkpoint_interval) */
};

/* Fill o with the documented defaults. */
void options_init(struct options *o);
void options_free(struct options *o);

/* Apply one option.  Returns 0, -ENOENT for an unknown key, or -EINVAL with
 * a reason in err for a bad value (o unchanged then). */
int options_set(struct options *o, const char *key, const char *value, char *err, size_t errlen);

/* The effective options as the `config` file shows them. */
json_t *options_to_json(const struct options *o);

/* Number parsers: a non-negative decimal, optionally with a K/M/G/T suffix
 * (powers of 1024) for sizes; seconds are digits with an optional fraction
 * (a dot and digits), at most 1e7: no sign, space, exponent, hex, "inf" or
 * "nan". 0 or -EINVAL. */
int parse_size(const char *s, long long *out);
int parse_seconds(const char *s, double *out);
/* The same for s[0..len) as written to a file: one trailing newline is
 * allowed, nothing else (a NUL is refused). */
int parse_seconds_text(const char *s, size_t len, double *out);

/* Parse a `limits` write: a JSON object whose keys are limit names and whose
 * values are non-negative integers (null: no limit).  Keys not given keep
 * their value from base.  Returns 0 with *out set, -EAGAIN when text is a
 * valid prefix of JSON that has not ended yet, or -EINVAL with a reason. */
int limits_parse_json(const char *text, size_t len, const struct limits *base, struct limits *out, char *err,
                      size_t errlen);
json_t *limits_to_json(const struct limits *l);
