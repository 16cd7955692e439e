#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_cleanup.h"
#include "macros.h"

const char *const limit_names[LIMIT_COUNT] = {"cpu", "memory", "fsize", "nproc", "nofile", "stack"};

void options_init(struct options *o) {
        *o = (struct options){
                .timeout_s = 30,
                .grace_s = 2,
                .pool = 1,
                .max_sessions = 256,
                .max_code_bytes = 1 << 20,
                .console_max_bytes = 1 << 20,
                .tmp_bytes = 64LL << 20,
                .files_max_bytes = 256LL << 20,
                .max_tool_calls = 1000,
                /* securer's defaults (default_limits()); stack is Linux's usual 8 MiB. */
                .limits = {{60, 512LL << 20, 50LL << 20, 50, 256, 8LL << 20}},
                .id_range = {ID_RANGE_DEFAULT_BASE, ID_RANGE_DEFAULT_COUNT},
                .checkpoint_interval_s = 30,
        };
}

void options_free(struct options *o) {
        free(o->audit_log);
        free(o->r_libs);
        free(o->worker_path);
        free(o->state_dir);
        o->audit_log = o->r_libs = o->worker_path = o->state_dir = NULL;
}

int parse_size(const char *s, long long *out) {
        char *end;
        unsigned long long v, mul = 1;

        if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s)
                return -EINVAL;
        switch (*end) {
        case '\0': break;
        case 'k': case 'K': mul = 1ULL << 10; end++; break;
        case 'm': case 'M': mul = 1ULL << 20; end++; break;
        case 'g': case 'G': mul = 1ULL << 30; end++; break;
        case 't': case 'T': mul = 1ULL << 40; end++; break;
        default: return -EINVAL;
        }
        if (*end != '\0' || v > (unsigned long long)INT64_MAX / mul)
                return -EINVAL;
        *out = (long long)(v * mul);
        return 0;
}

int parse_seconds_text(const char *s, size_t len, double *out) {
        char buf[64];
        size_t i = 0;
        double v;

        if (len > 0 && s[len - 1] == '\n')
                len--;
        /* Digits, then optionally a dot and digits: strtod alone would also
         * take "0x10", "1e-9", "inf" and leading spaces. */
        while (i < len && s[i] >= '0' && s[i] <= '9')
                i++;
        if (i == 0)
                return -EINVAL;
        if (i < len && s[i] == '.') {
                size_t frac = ++i;
                while (i < len && s[i] >= '0' && s[i] <= '9')
                        i++;
                if (i == frac)
                        return -EINVAL;
        }
        if (i != len || len >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = '\0';
        v = strtod(buf, NULL);
        if (!isfinite(v) || v > 1e7)
                return -EINVAL;
        *out = v;
        return 0;
}

int parse_seconds(const char *s, double *out) {
        if (!s || memchr(s, '\n', strlen(s)))
                return -EINVAL;
        return parse_seconds_text(s, strlen(s), out);
}

static int set_string(char **field, const char *value) {
        char *copy = strdup(value);

        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

int options_set(struct options *o, const char *key, const char *value, char *err, size_t errlen) {
        long long n;
        double d;

        for (int i = 0; i < LIMIT_COUNT; i++) {
                if (strcmp(key, limit_names[i]) != 0)
                        continue;
                if (strcmp(value, "none") == 0 || strcmp(value, "unlimited") == 0) {
                        o->limits.v[i] = LIMIT_UNSET;
                        return 0;
                }
                if (parse_size(value, &n) < 0 || n == 0) {
                        snprintf(err, errlen, "%s=%s: expected a positive number%s, or none", key, value,
                                 i == LIMIT_CPU ? " of seconds" : "");
                        return -EINVAL;
                }
                o->limits.v[i] = n;
                return 0;
        }
        if (strcmp(key, "timeout") == 0 || strcmp(key, "grace") == 0) {
                if (parse_seconds(value, &d) < 0) {
                        snprintf(err, errlen, "%s=%s: expected a number of seconds", key, value);
                        return -EINVAL;
                }
                *(key[0] == 't' ? &o->timeout_s : &o->grace_s) = d;
                return 0;
        }
        if (strcmp(key, "max_tool_calls") == 0) {
                if (parse_size(value, &n) < 0 || n > 1000000) {
                        snprintf(err, errlen, "%s=%s: expected a count up to 1000000", key, value);
                        return -EINVAL;
                }
                o->max_tool_calls = (unsigned)n;
                return 0;
        }
        if (strcmp(key, "pool") == 0 || strcmp(key, "max_sessions") == 0) {
                bool pool = key[0] == 'p';
                /* The pool is kept small; max_sessions is bounded by what
                 * the machine holds, checked at start (fs/capacity.h). */
                long long cap = pool ? 4096 : (long long)OPTIONS_MAX_SESSIONS;
                if (parse_size(value, &n) < 0 || n > cap || (!pool && n == 0)) {
                        snprintf(err, errlen, "%s=%s: expected a count up to %lld", key, value, cap);
                        return -EINVAL;
                }
                *(pool ? &o->pool : &o->max_sessions) = (unsigned)n;
                return 0;
        }
        if (strcmp(key, "max_code_bytes") == 0 || strcmp(key, "console_max_bytes") == 0 ||
            strcmp(key, "tmp_size") == 0) {
                if (parse_size(value, &n) < 0 || n == 0 || n > (1LL << 30)) {
                        snprintf(err, errlen, "%s=%s: expected a size from 1 byte to 1G", key, value);
                        return -EINVAL;
                }
                if (key[0] == 'm')
                        o->max_code_bytes = n;
                else if (key[0] == 'c')
                        o->console_max_bytes = n;
                else
                        o->tmp_bytes = n;
                return 0;
        }
        if (strcmp(key, "files_max_bytes") == 0) {
                if (parse_size(value, &n) < 0 || n < (64LL << 10) || n > (1LL << 40)) {
                        snprintf(err, errlen, "%s=%s: expected a size from 64K to 1T", key, value);
                        return -EINVAL;
                }
                o->files_max_bytes = n;
                return 0;
        }
        if (strcmp(key, "id_range") == 0) {
                struct id_range r;

                if (id_range_parse(value, &r, err, errlen) < 0)
                        return -EINVAL;
                o->id_range = r;
                return 0;
        }
        if (strcmp(key, "sandbox") == 0) {
                if (strcmp(value, "strict") != 0 && strcmp(value, "none") != 0) {
                        snprintf(err, errlen, "sandbox=%s: expected strict or none", value);
                        return -EINVAL;
                }
                o->sandbox_none = strcmp(value, "none") == 0;
                return 0;
        }
        if (strcmp(key, "allow_exec") == 0) {
                if (strcmp(value, "1") != 0 && strcmp(value, "0") != 0) {
                        snprintf(err, errlen, "allow_exec takes no value");
                        return -EINVAL;
                }
                o->allow_exec = value[0] == '1';
                return 0;
        }
        if (strcmp(key, "checkpoint_interval") == 0) {
                double v;

                if (parse_seconds(value, &v) < 0 || v < 0.1 || v > 86400) {
                        snprintf(err, errlen, "%s=%s: expected seconds from 0.1 to 86400", key, value);
                        return -EINVAL;
                }
                o->checkpoint_interval_s = v;
                return 0;
        }
        if (strcmp(key, "state_dir") == 0) {
                if (!*value) {
                        snprintf(err, errlen, "%s: expected a directory", key);
                        return -EINVAL;
                }
                return set_string(&o->state_dir, value);
        }
        if (strcmp(key, "audit_log") == 0 || strcmp(key, "r_libs") == 0 || strcmp(key, "worker") == 0) {
                if (!*value) {
                        snprintf(err, errlen, "%s: expected a path", key);
                        return -EINVAL;
                }
                if (strcmp(key, "r_libs") == 0) {
                        /* Each directory must be absolute: it is bound at the same
                         * path inside the jail. */
                        for (const char *p = value; p; p = strchr(p, ':') ? strchr(p, ':') + 1 : NULL)
                                if (*p != '/') {
                                        snprintf(err, errlen, "r_libs=%s: each directory must be an absolute path",
                                                 value);
                                        return -EINVAL;
                                }
                }
                return set_string(key[0] == 'a' ? &o->audit_log : key[0] == 'r' ? &o->r_libs : &o->worker_path,
                                  value);
        }
        return -ENOENT;
}

json_t *limits_to_json(const struct limits *l) {
        json_t *j = json_object();

        for (int i = 0; i < LIMIT_COUNT; i++)
                json_object_set_new(j, limit_names[i],
                                    l->v[i] == LIMIT_UNSET ? json_null() : json_integer(l->v[i]));
        return j;
}

json_t *options_to_json(const struct options *o) {
        json_t *j = json_pack("{s:f, s:f, s:i, s:i, s:I, s:I, s:I, s:s, s:s?, s:b, s:b, s:s?, s:o}",
                         "timeout", o->timeout_s, "grace", o->grace_s, "pool", (int)o->pool,
                         "max_sessions", (int)o->max_sessions, "max_code_bytes", (json_int_t)o->max_code_bytes,
                         "console_max_bytes", (json_int_t)o->console_max_bytes, "tmp_size",
                         (json_int_t)o->tmp_bytes, "sandbox", o->sandbox_none ? "none" : "strict", "audit_log",
                         o->audit_log, "allow_other", o->allow_other, "allow_exec", o->allow_exec, "r_libs", o->r_libs, "limits",
                         limits_to_json(&o->limits));
        if (j) {
                json_object_set_new(j, "max_tool_calls", json_integer(o->max_tool_calls));
                json_object_set_new(j, "files_max_bytes", json_integer(o->files_max_bytes));
                json_object_set_new(j, "id_range", json_pack("{s:I, s:I}", "base", (json_int_t)o->id_range.base,
                                                             "count", (json_int_t)o->id_range.count));
        }
        return j;
}

int limits_parse_json(const char *text, size_t len, const struct limits *base, struct limits *out, char *err,
                      size_t errlen) {
        _cleanup_json_ json_t *j = NULL;
        json_error_t jerr;
        struct limits l = *base;
        const char *key;
        json_t *v;

        j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!j) {
                if (json_error_code(&jerr) == json_error_premature_end_of_input)
                        return -EAGAIN;
                snprintf(err, errlen, "limits: not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                         jerr.column);
                return -EINVAL;
        }
        if (!json_is_object(j)) {
                snprintf(err, errlen, "limits: expected a JSON object such as {\"cpu\": 10}");
                return -EINVAL;
        }
        json_object_foreach(j, key, v) {
                int i;
                for (i = 0; i < LIMIT_COUNT; i++)
                        if (strcmp(key, limit_names[i]) == 0)
                                break;
                if (i == LIMIT_COUNT) {
                        snprintf(err, errlen,
                                 "limits: unknown limit \"%.64s\" (known: cpu, memory, fsize, nproc, nofile, stack)",
                                 key);
                        return -EINVAL;
                }
                if (json_is_null(v)) {
                        l.v[i] = LIMIT_UNSET;
                        continue;
                }
                if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
                    json_real_value(v) >= 1 && json_real_value(v) < 9e15) {
                        l.v[i] = (long long)json_real_value(v);
                        continue;
                }
                if (!json_is_integer(v) || json_integer_value(v) <= 0) {
                        snprintf(err, errlen, "limits: %s must be a positive integer or null", key);
                        return -EINVAL;
                }
                l.v[i] = json_integer_value(v);
        }
        if (l.v[LIMIT_NOFILE] != LIMIT_UNSET && l.v[LIMIT_NOFILE] < 16) {
                snprintf(err, errlen, "limits: nofile below 16 would leave R unable to start");
                return -EINVAL;
        }
        if (l.v[LIMIT_MEMORY] != LIMIT_UNSET && l.v[LIMIT_MEMORY] < (64LL << 20)) {
                snprintf(err, errlen, "limits: memory below 64 MiB would leave R unable to run");
                return -EINVAL;
        }
        *out = l;
        return 0;
}
