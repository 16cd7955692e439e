/* One securerfs session, as a client of the mount sees it: sessions/NAME/
 * and the files in it (README of the mount, "The tree").
 *
 * A run's transport is three calls on one descriptor, the session's eval
 * (README, "The tree"), kept open read-write with O_NONBLOCK for the
 * session's life: rsession_run_begin() writes the code at offset 0 and
 * reads once (the first read after a program starts its run; EAGAIN while
 * it goes on), rsession_run_fd() is that descriptor, to poll(2) for POLLIN
 * (readable when the run has ended), and rsession_run_finish() reads the
 * run's result.json from it (one read gives the status, value, text, error,
 * console and the files the run changed).
 *
 * Everything here is a plain file operation on the mount, which the
 * daemon answers from its event loop at once, except creating a session:
 * mkdir and the read of clone wait until the session's worker is ready,
 * so rsession_open() must run off the server's loop. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct rsession {
        char name[65];
        bool owned;       /* created by this server: removed when it ends */
        int sessions_fd;  /* MNT/sessions, O_PATH */
        int dir_fd;       /* MNT/sessions/NAME, O_PATH */
        int files_fd;     /* its files/, O_PATH */
        int result_fd;    /* its eval, O_RDWR | O_NONBLOCK, kept open: the runs */
        int console_fd;   /* its console, kept open */
        int status_fd;    /* its status, kept open */
        double timeout_s; /* seconds per run (0: none), as the session says */
        /* The run under way. */
        bool running;
        bool seen_running;  /* status said "running": console is this run's */
        size_t console_off; /* console bytes of this run already handed out */
};

/* Is name a session name the mount accepts: 1-64 of [A-Za-z0-9._-], not
 * starting with "."? */
bool rsession_name_ok(const char *name);

/* Open a session of the mount at mount: a new one through clone when name
 * is NULL (owned: removed by rsession_close()), else sessions/name, made
 * with mkdir when it does not exist (not owned: it outlives this server).
 * timeout_s >= 0 is written to its timeout file first.  Blocks until the
 * session's worker is ready.  Returns 0 or -errno with a reason in err. */
int rsession_open(const char *mount, const char *name, double timeout_s, struct rsession **out, char *err,
                  size_t errlen);

/* Remove the session if this server made it (rmdir: also ends a run under
 * way), then free.  Accepts NULL. */
void rsession_close(struct rsession *s);

/* Start a run of code[0..len) (len > 0).  Returns 0, -EBUSY (another
 * writer, or a run of another client under way), -EFBIG (over the mount's
 * max_code_bytes), -ENOENT (the session was closed), or another -errno. */
int rsession_run_begin(struct rsession *s, const char *code, size_t len);

/* The descriptor that becomes readable (POLLIN) when the run has ended. */
static inline int rsession_run_fd(const struct rsession *s) {
        return s->result_fd;
}

/* The result of the run that ended: result.json as a JSON object with at
 * least a string "status" (checked).  -EAGAIN while the run goes on;
 * -EPROTO if the mount's answer is not such an object; -ENOENT when the
 * session was closed. */
int rsession_run_finish(struct rsession *s, json_t **result);

/* New console bytes of the run under way, at most cap, into buf (*n; 0:
 * nothing new, or the run has not reached its worker yet). */
int rsession_console(struct rsession *s, char *buf, size_t cap, size_t *n);

/* ctl commands: end the run under way keeping the state; a fresh worker. */
int rsession_interrupt(struct rsession *s);
int rsession_restart(struct rsession *s);

/* The host tools the session sees (the NAME.json files of MNT/tools and of its own tools directory,
 * which hide global ones of the same name), as a sorted array of
 * {"name","description","args":{name: type}}, at most max of them.  A file
 * that cannot be read or parsed is skipped. */
json_t *rsession_host_tools(const struct rsession *s, const char *mount, size_t max);
