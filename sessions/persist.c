/* Sessions that outlive the daemon (sessions/persist.h). */
#include "persist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "macros.h"
#include "session_private.h"
#include "snapshot.h"
#include "snapshot_file.h"

/* Checkpoints under way at once: each is one worker's serialize and write,
 * which takes a CPU while it lasts. */
#define CHECKPOINTS_AT_ONCE 2
/* How often the timer looks for sessions due. */
#define CHECKPOINT_TICK_NS 1000000000ULL
#define SUFFIX ".snap"
/* NAME.snap.unrestored: a saved state that did not come back, kept
 * (persist_keep_unrestored); it ends in no SUFFIX, so it is no session. */
#define UNRESTORED ".unrestored"

struct persist {
        struct sessions *t;
        int dir_fd;
        char *dir;
        struct list dirty;       /* sessions changed since their last checkpoint */
        struct loop_timer *tick;
        unsigned running;        /* checkpoints under way */
        unsigned flushing;       /* a clean stop's checkpoints still under way */
        void (*flushed)(void *data);
        void *flushed_data;
};

struct checkpoint {
        struct persist *p;
        struct session *s;       /* NULL once it closed */
        uint64_t id;
        char name[65];
        int fd;
        session_state_fn fn;     /* ctl checkpoint's, or NULL */
        void *data;
        bool for_stop;
};

/* ---- the directory -------------------------------------------------------- */

/* DIR: made 0700 if missing; refused if it is a link, not a directory,
 * another user's, or open to others (a snapshot holds everything the
 * session had). */
static int open_dir(const char *dir, char *err, size_t n) {
        struct stat st;
        int fd;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                snprintf(err, n, "state_dir %s: %s", dir, strerror(errno));
                return -errno;
        }
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                int e = errno;

                snprintf(err, n, "state_dir %s: %s", dir,
                         e == ELOOP || e == ENOTDIR ? "is a symbolic link or not a directory; refusing it"
                                                    : strerror(e));
                return -e;
        }
        if (fstat(fd, &st) < 0 || st.st_uid != geteuid()) {
                snprintf(err, n, "state_dir %s: owned by uid %u, not by this daemon's user; refusing it", dir,
                         (unsigned)st.st_uid);
                close(fd);
                return -EPERM;
        }
        if ((st.st_mode & 077) && fchmod(fd, 0700) < 0) {
                snprintf(err, n, "state_dir %s: mode %o cannot be made 0700: %s", dir, st.st_mode & 07777,
                         strerror(errno));
                close(fd);
                return -EPERM;
        }
        return fd;
}

static bool saved_name(const char *file, char *name, size_t n) {
        size_t len = strlen(file);

        if (len <= strlen(SUFFIX) || strcmp(file + len - strlen(SUFFIX), SUFFIX) != 0 ||
            len - strlen(SUFFIX) >= n)
                return false;
        memcpy(name, file, len - strlen(SUFFIX));
        name[len - strlen(SUFFIX)] = '\0';
        return session_name_valid(name);
}

static void on_tick(void *data);

int sessions_open_state(struct sessions *t, const char *dir, char *err, size_t n) {
        struct persist *p = calloc(1, sizeof(*p));
        unsigned found = 0;
        struct dirent *de;
        DIR *d;
        int fd;

        if (!p)
                return -ENOMEM;
        p->t = t;
        list_init(&p->dirty);
        p->dir_fd = open_dir(dir, err, n);
        if (p->dir_fd < 0) {
                int e = p->dir_fd;

                free(p);
                return e;
        }
        p->dir = strdup(dir);
        p->tick = loop_timer_new(t->loop, on_tick, p);
        if (!p->dir || !p->tick) {
                close(p->dir_fd);
                free(p->dir);
                loop_timer_free(p->tick);
                free(p);
                return -ENOMEM;
        }
        t->persist = p;
        /* The saved sessions, by name: only their names are read now (a
         * daemon with 500 of them starts at once). */
        fd = dup(p->dir_fd);
        d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
                if (fd >= 0)
                        close(fd);
                snprintf(err, n, "state_dir %s: cannot list it", dir);
                return -EIO;
        }
        while ((de = readdir(d))) {
                char name[65];
                struct session *s;

                if (de->d_name[0] == '.' && (strstr(de->d_name, ".snap.tmp") || strstr(de->d_name, ".settings.tmp"))) {
                        /* A checkpoint a killed daemon did not finish: the
                         * NAME.snap before it is the session's state. */
                        unlinkat(p->dir_fd, de->d_name, 0);
                        continue;
                }
                if (!saved_name(de->d_name, name, sizeof(name)))
                        continue;
                if (sessions_create_saved(t, name, &s) < 0) {
                        log_error("state_dir: session %s not loaded (too many sessions, or a bad name)", name);
                        continue;
                }
                found++;
                /* Numbers the next clone would pick skip the saved names. */
                {
                        char *end;
                        unsigned long long v = strtoull(name, &end, 10);

                        if (*end == '\0' && v > t->next_auto_name)
                                t->next_auto_name = v;
                }
        }
        closedir(d);
        if (found)
                log_info("state_dir %s: %u saved sessions", dir, found);
        loop_timer_arm(p->tick, now_ns() + CHECKPOINT_TICK_NS);
        return 0;
}

void persist_free(struct sessions *t) {
        struct persist *p = t->persist;

        if (!p)
                return;
        loop_timer_free(p->tick);
        close(p->dir_fd);
        free(p->dir);
        free(p);
        t->persist = NULL;
}

int persist_open_saved(struct session *s, int *fd, off_t *size) {
        struct persist *p = s->owner->persist;
        char file[80];
        struct stat st;
        int f;

        if (!p)
                return -ENOENT;
        snprintf(file, sizeof(file), "%s" SUFFIX, s->name);
        /* O_NONBLOCK: a FIFO put there would make open(2) — and the
         * daemon's one loop — wait for a writer; O_NOCTTY for a terminal.
         * Whatever is not a regular file is refused once open. */
        f = openat(p->dir_fd, file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (f < 0)
                return -errno;
        if (fstat(f, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(f);
                return -EINVAL;
        }
        *fd = f;
        *size = st.st_size;
        return 0;
}

int persist_keep_unrestored(struct session *s, char *kept, size_t n) {
        struct persist *p = s->owner->persist;
        char file[80];

        if (!p)
                return -ENOENT;
        snprintf(file, sizeof(file), "%s" SUFFIX, s->name);
        snprintf(kept, n, "%s" SUFFIX UNRESTORED, s->name);
        /* An older one goes: the newest state that did not come back is the
         * one a person wants.  Whatever the entry is (a file, a link, a
         * directory someone put there) it is moved, never followed. */
        if (renameat(p->dir_fd, file, p->dir_fd, kept) < 0)
                return -errno;
        return 0;
}

/* ---- checkpoints ------------------------------------------------------------ */

void persist_mark_dirty(struct session *s) {
        struct persist *p = s->owner->persist;

        if (!p || s->dormant)
                return;
        s->dirty = true;
        if (!list_linked(&s->dirty_link))
                list_append(&p->dirty, &s->dirty_link);
}

void persist_session_closing(struct session *s) {
        list_unlink(&s->dirty_link);
        list_init(&s->dirty_link);
}

static void checkpoint_finished(struct checkpoint *c, int err, const char *why) {
        struct persist *p = c->p;

        p->running--;
        if (c->s) {
                c->s->checkpointing = false;
                c->s->checkpoint = NULL;
        }
        if (c->fn)
                c->fn(c->data, err, why);
        if (c->for_stop && --p->flushing == 0 && p->flushed)
                p->flushed(p->flushed_data);
        free(c);
        /* The next ones due go now, not at the next tick. */
        if (!p->flushed)
                loop_timer_arm(p->tick, now_ns() + 1);
}

/* The session's settings (timeout, limits, tools) into NAME.settings, the
 * daemon's own file: a restore of the saved session takes them from there,
 * not from the snapshot, whose stream is the worker's (its metadata names
 * host commands: docs/security.md, "Round 4").  0 or -errno. */
static int write_settings(struct persist *p, struct session *s, const char *name) {
        char tmp[80], file[80];
        json_t *j = session_settings_json(s);
        char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
        int fd, e = 0;

        json_decref(j);
        if (!text)
                return -ENOMEM;
        snprintf(tmp, sizeof(tmp), ".%s.settings.tmp", name);
        snprintf(file, sizeof(file), "%s.settings", name);
        fd = openat(p->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                free(text);
                return -errno;
        }
        if (write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fsync(fd) < 0)
                e = -EIO;
        close(fd);
        free(text);
        if (e == 0 && renameat(p->dir_fd, tmp, p->dir_fd, file) < 0)
                e = -errno;
        if (e < 0)
                unlinkat(p->dir_fd, tmp, 0);
        return e;
}

json_t *persist_load_settings(struct session *s) {
        struct persist *p = s->owner->persist;
        char file[80];
        _cleanup_free_ char *buf = malloc(SNAPSHOT_META_MAX);
        json_error_t jerr;
        json_t *j;
        int fd;
        ssize_t n;

        if (!p || !buf)
                return NULL;
        snprintf(file, sizeof(file), "%s.settings", s->name);
        fd = openat(p->dir_fd, file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
                log_info("session %s: no %s in state_dir: restored with the daemon's timeout and limits, no tools",
                         s->name, file);
                return NULL;
        }
        n = read(fd, buf, SNAPSHOT_META_MAX);
        close(fd);
        j = n > 0 ? json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr) : NULL;
        if (!json_is_object(j)) {
                json_decref(j);
                log_warn("session %s: %s is not a settings object: restored with the daemon's timeout and limits, "
                         "no tools", s->name, file);
                return NULL;
        }
        return j;
}

/* A checkpoint's end in s's log; the first of a row of failures in its
 * next result too, and the first success after them, so that a session
 * that is no longer saved hears it once, not at every run.  Until
 * 2026-12-03 a failure was on the daemon's stderr only (docs/security.md,
 * "Round 10", finding 11). */
static void checkpoint_told(struct session *s, int err, const char *why) {
        char what[600];

        if (err == 0) {
                session_audit(s, json_pack("{s:s}", "event", "checkpoint"));
                if (s->checkpoint_failing)
                        session_notice(s, "its checkpoint to state_dir succeeded again");
                s->checkpoint_failing = false;
                return;
        }
        session_audit(s, json_pack("{s:s, s:s}", "event", "checkpoint_failed", "reason", why));
        if (!s->checkpoint_failing) {
                snprintf(what, sizeof(what),
                         "its checkpoint to state_dir failed (%.500s): a restart brings back the state of its last "
                         "checkpoint, or none",
                         why);
                session_notice(s, what);
        }
        s->checkpoint_failing = true;
}

static void on_checkpoint_written(void *data, int err, const char *why) {
        struct checkpoint *c = data;
        struct persist *p = c->p;
        char tmp[80], file[80];

        snprintf(tmp, sizeof(tmp), ".%s" SUFFIX ".tmp", c->name);
        snprintf(file, sizeof(file), "%s" SUFFIX, c->name);
        close(c->fd);
        /* The daemon's copy synced the file before it ended (the worker only
         * ever held a pipe: sessions/state_copy.h); the rename makes it the
         * session's (atomic: the old file or the new one, never
         * half of one).  A session removed meanwhile keeps no file. */
        if (err == 0 && c->s) {
                /* These fail on the state_dir's own account (a directory
                 * where NAME.snap should be, a full disk): their errno is the
                 * reason, not the copy's empty why. */
                if ((err = write_settings(p, c->s, c->name)) < 0 ||
                    (renameat(p->dir_fd, tmp, p->dir_fd, file) < 0 && (err = -errno) < 0))
                        why = NULL;
        }
        if (err < 0 && (!why || !*why))
                why = strerror(-err);
        if (err < 0 || !c->s) {
                unlinkat(p->dir_fd, tmp, 0);
                if (err < 0)
                        log_error("session %s: checkpoint failed: %s", c->name, why);
        }
        if (c->s)
                checkpoint_told(c->s, err, why);
        checkpoint_finished(c, err, why);
}

/* Start s's checkpoint: 0, or -errno (nothing started). */
static int checkpoint_start(struct session *s, session_state_fn fn, void *data, bool for_stop) {
        struct persist *p = s->owner->persist;
        struct checkpoint *c;
        char tmp[80];
        int e;

        if (!p)
                return -ENOTSUP;
        if (s->state == SESSION_DEAD || s->dormant)
                return s->dormant ? -EALREADY : -EIO;
        if (s->checkpointing)
                return -EBUSY; /* its file is being written; the next one waits */
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (struct checkpoint){.p = p, .s = s, .id = s->id, .fn = fn, .data = data, .for_stop = for_stop};
        snprintf(c->name, sizeof(c->name), "%s", s->name);
        snprintf(tmp, sizeof(tmp), ".%s" SUFFIX ".tmp", s->name);
        c->fd = openat(p->dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (c->fd < 0) {
                e = -errno;
                free(c);
                return e;
        }
        /* From now until it is written, what changes counts for the next
         * one. */
        s->dirty = false;
        list_unlink(&s->dirty_link);
        list_init(&s->dirty_link);
        s->checkpointing = true;
        s->last_checkpoint_ns = now_ns();
        p->running++;
        if (for_stop)
                p->flushing++;
        e = session_snapshot_to(s, c->fd, on_checkpoint_written, c);
        if (e < 0) {
                close(c->fd);
                unlinkat(p->dir_fd, tmp, 0);
                s->checkpointing = false;
                p->running--;
                if (for_stop)
                        p->flushing--;
                persist_mark_dirty(s);
                free(c);
                return e;
        }
        /* The session may close before it is done: the snapshot's answer
         * (ENOENT) still comes, and finds c->s gone. */
        s->checkpoint = c;
        return 0;
}

void persist_checkpoint_forget(struct session *s) {
        if (s->checkpoint)
                ((struct checkpoint *)s->checkpoint)->s = NULL;
        s->checkpoint = NULL;
}

static void on_tick(void *data) {
        struct persist *p = data;
        uint64_t now = now_ns(), every = (uint64_t)(p->t->opt->checkpoint_interval_s * 1e9);
        struct session *s;

        list_for_each(s, tmp, &p->dirty, struct session, dirty_link) {
                if (p->running >= CHECKPOINTS_AT_ONCE)
                        break;
                /* Idle ones only: a running session is checkpointed after
                 * its run (it stays on the list). */
                if (s->checkpointing || s->state != SESSION_IDLE || s->run || s->xfer ||
                    now - s->last_checkpoint_ns < every)
                        continue;
                if (checkpoint_start(s, NULL, NULL, false) < 0)
                        break;
        }
        loop_timer_arm(p->tick, now + CHECKPOINT_TICK_NS);
}

int session_checkpoint(struct session *s, session_state_fn fn, void *data) {
        return checkpoint_start(s, fn, data, false);
}

void session_forget_saved(struct session *s) {
        struct persist *p = s->owner->persist;
        char file[80];

        if (!p)
                return;
        snprintf(file, sizeof(file), "%s" SUFFIX, s->name);
        unlinkat(p->dir_fd, file, 0);
        snprintf(file, sizeof(file), "%s.settings", s->name);
        unlinkat(p->dir_fd, file, 0);
        snprintf(file, sizeof(file), "%s" SUFFIX UNRESTORED, s->name);
        unlinkat(p->dir_fd, file, 0);
        persist_checkpoint_forget(s);
}

unsigned sessions_checkpoint_all(struct sessions *t, void (*fn)(void *data), void *data) {
        struct persist *p = t->persist;
        struct session *s;
        unsigned started = 0;

        if (!p)
                return 0;
        p->flushed = fn;
        p->flushed_data = data;
        loop_timer_arm(p->tick, 0);
        list_for_each(s, tmp, &t->sessions, struct session, link) {
                /* A dormant session's file is its state already; a dead
                 * one has none to write; one whose checkpoint is under way
                 * gets a second, which waits for the first. */
                if (s->dormant || s->state == SESSION_DEAD || s->creating)
                        continue;
                if (s->checkpoint) {
                        struct checkpoint *c = s->checkpoint;

                        /* Under way: the stop waits for it (it has what
                         * the session had when it began, and a run cannot
                         * start any more). */
                        if (!c->for_stop) {
                                c->for_stop = true;
                                p->flushing++;
                                started++;
                        }
                        continue;
                }
                if (checkpoint_start(s, NULL, NULL, true) == 0)
                        started++;
        }
        return started;
}
