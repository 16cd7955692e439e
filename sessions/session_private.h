/* Inside sessions/ only: the session's and the result's state.  The fs layer
 * sees both through sessions/session.h's functions. */
#pragma once

#include "session.h"

struct result {
        unsigned refs;
        uint64_t seq;
        enum run_status status;
        /* The files read with cat: control characters shown escaped
         * (common/escape.h); result_json has the exact text. */
        struct text output;      /* formatted value + "\n"; empty after an error */
        struct text error;       /* message + "\n"; empty on success */
        struct text console;
        struct text result_json; /* the result.json file */
        struct text value_json;  /* the value.json file */
};

struct session {
        uint64_t id;   /* never reused; the fs layer derives inode numbers from it */
        char name[65];
        enum session_state state;
        struct sessions *owner;
        struct worker *worker;
        double timeout_s;
        struct limits limits;
        uint64_t next_seq;
        struct run *run;       /* under way or queued; NULL when none */
        struct result *last;   /* last finished run; NULL before the first */
        struct text log;       /* this session's audit events, JSON lines */
        char *dead_reason;     /* why the worker could not start, when DEAD */
        bool creating;         /* waiting for its first worker */
        struct loop_timer *create_deadline; /* the creating mkdir's answer is due */
        unsigned start_retries; /* workers replaced in a row after a helper failed */
        bool closing;
        void *input_writer;    /* the fs handle open for writing input, if any */
        void *fs_data;         /* owned by the fs layer */
        struct tool_scope *tools; /* owned by sessions/tools.c; made with the session */
        struct workspace *workspace; /* its files (sessions/workspace.h); kept across workers */
        /* Its host uid/gid, from the daemon's id range (root, strict mode):
         * its workers' 1000 outside and the owner of its workspace; held
         * until it is closed and its last worker reaped.  NULL: the
         * daemon's own ids (unprivileged, none mode). */
        struct host_id *host_id;
        struct session *prev, *next;
};
