/* Mount set-up and the FUSE channel on the loop (fs/fs.h). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "files.h"
#include "fs_private.h"
#include "handle.h"
#include "log.h"
#include "loop.h"
#include "options.h"
#include "parked.h"
#include "sessions/session.h"

static void on_fuse_readable(int fd, uint32_t events, void *data) {
        struct fs *fs = data;

        /* A few requests per wake-up, then back to the loop so that workers
         * and timers are served too. */
        for (int i = 0; i < 32; i++) {
                int r = fuse_session_receive_buf(fs->se, &fs->buf);
                if (r == -EAGAIN || r == -EINTR)
                        return;
                if (r <= 0) {
                        if (r < 0)
                                log_error("reading the FUSE channel: %s", strerror(-r));
                        loop_stop(fs->loop);
                        return;
                }
                fuse_session_process_buf(fs->se, &fs->buf);
                if (fuse_session_exited(fs->se)) {
                        loop_stop(fs->loop);
                        return;
                }
        }
}

int fs_new(struct loop *l, const struct options *o, struct fuse_args *args, const char *mountpoint,
           struct fs **out) {
        struct fs *fs = calloc(1, sizeof(*fs));

        if (!fs)
                return -ENOMEM;
        fs->loop = l;
        fs->opt = o;
        fs->uid = getuid();
        fs->gid = getgid();
        list_init(&fs->open_handles);
        clock_gettime(CLOCK_REALTIME, &fs->mount_time);
        fs->se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), fs);
        if (!fs->se) {
                free(fs);
                return -EINVAL; /* libfuse said why */
        }
        if (fuse_session_mount(fs->se, mountpoint) != 0) {
                fuse_session_destroy(fs->se);
                free(fs);
                return -EIO;
        }
        fs->mounted = true;
        *out = fs;
        return 0;
}

int fs_start(struct fs *fs) {
        struct session_events ev = fs_session_events(fs);
        int fd = fuse_session_fd(fs->se), flags, r;

        if ((r = fs_sessions_init(fs)) < 0)
                return r;
        fs->files = files_new(fs);
        if (!fs->files)
                return -ENOMEM;
        if ((r = sessions_new(fs->loop, fs->opt, &ev, &fs->sessions)) < 0)
                return r;
        if (fs->opt->audit_log && (r = sessions_open_audit(fs->sessions, fs->opt->audit_log)) < 0)
                return r;
        if (fs->opt->state_dir) {
                char err[512];

                if ((r = sessions_open_state(fs->sessions, fs->opt->state_dir, err, sizeof(err))) < 0) {
                        log_error("%s", err);
                        return r;
                }
        }
        if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        return loop_add_fd(fs->loop, fd, EPOLLIN, on_fuse_readable, fs);
}

void fs_unmount(struct fs *fs) {
        if (fs && fs->mounted) {
                loop_del_fd(fs->loop, fuse_session_fd(fs->se));
                fuse_session_unmount(fs->se);
                fs->mounted = false;
        }
}

unsigned fs_checkpoint_all(struct fs *fs, void (*fn)(void *data), void *data) {
        return fs->sessions ? sessions_checkpoint_all(fs->sessions, fn, data) : 0;
}

void fs_free(struct fs *fs) {
        if (!fs)
                return;
        fs_unmount(fs);
        /* Every session's closing event answers what is parked on it and
         * frees fs/'s state of it. */
        sessions_free(fs->sessions);
        /* Handles whose RELEASE never came (the unmount overtook it). */
        while (!list_empty(&fs->open_handles))
                handle_free(list_entry(fs->open_handles.next, struct handle, open_link));
        files_free(fs->files);
        fs_sessions_free(fs);
        fuse_session_destroy(fs->se);
        free(fs->buf.mem);
        free(fs);
}
