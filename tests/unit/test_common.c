/* Unit tests of common/: text, list, smallfile, child, the loop's child
 * watches and its idle timers. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "child.h"
#include "clock.h"
#include "fdpass.h"
#include "list.h"
#include "loop.h"
#include "smallfile.h"
#include "text.h"

static void test_text(void) {
        struct text t = {0};
        size_t len;
        char *p;

        CHECK(text_append(&t, "abc", 3) == 0 && t.len == 3 && strcmp(t.data, "abc") == 0);
        CHECK(text_append(&t, "\0d", 2) == 0 && t.len == 5 && t.data[3] == '\0' && t.data[4] == 'd');
        CHECK(text_set(&t, "xy", 2) == 0 && t.len == 2 && strcmp(t.data, "xy") == 0);
        for (int i = 0; i < 1000; i++)
                CHECK(text_append(&t, "0123456789", 10) == 0);
        CHECK(t.len == 10002 && t.cap > t.len && t.data[t.len] == '\0');
        text_consume(&t, 10000);
        CHECK(t.len == 2 && strcmp(t.data, "89") == 0);
        text_consume(&t, 5);
        CHECK(t.len == 0 && t.data[0] == '\0');
        text_clear(&t);
        CHECK(t.len == 0);
        CHECK(text_append(&t, "q", 1) == 0);
        p = text_steal(&t, &len);
        CHECK(p && len == 1 && strcmp(p, "q") == 0 && t.data == NULL && t.len == 0);
        free(p);
        CHECK(text_steal(&t, &len) == NULL && len == 0);
        CHECK(text_reserve(&t, (size_t)-1) == -ENOMEM && t.data == NULL);
        text_free(&t);
        text_free(&t);
}

struct item {
        int v;
        struct list link;
};

static void test_list(void) {
        struct list head = LIST_INIT(head);
        struct item items[5], *it;
        int sum = 0, order[5], n = 0;

        CHECK(list_empty(&head) && list_first(&head, struct item, link) == NULL);
        for (int i = 0; i < 5; i++) {
                items[i].v = i;
                list_init(&items[i].link);
                CHECK(!list_linked(&items[i].link));
                if (i == 4)
                        list_prepend(&head, &items[i].link);
                else
                        list_append(&head, &items[i].link);
        }
        list_for_each(it, next, &head, struct item, link) order[n++] = it->v;
        CHECK(n == 5 && order[0] == 4 && order[1] == 0 && order[4] == 3);
        /* Unlinking the current element while iterating. */
        list_for_each(it, next, &head, struct item, link) {
                if (it->v % 2 == 0)
                        list_unlink(&it->link);
        }
        list_for_each(it, next, &head, struct item, link) sum += it->v;
        CHECK(sum == 1 + 3);
        list_unlink(&items[0].link); /* twice: harmless */
        CHECK(!list_linked(&items[0].link) && list_linked(&items[1].link));
        CHECK(list_first(&head, struct item, link) == &items[1]);
}

static void test_smallfile(void) {
        char dir[] = "/tmp/test_common.XXXXXX", buf[64];
        int dfd;

        CHECK(mkdtemp(dir) != NULL);
        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        CHECK(dfd >= 0);
        CHECK(small_file_write(dfd, "f", "hello\n", O_CREAT | O_EXCL, 0600) == 0);
        CHECK(small_file_write(dfd, "f", "x", O_CREAT | O_EXCL, 0600) == -EEXIST);
        CHECK(small_file_read(dfd, "f", buf, sizeof(buf)) == 6 && strcmp(buf, "hello\n") == 0);
        CHECK(small_file_read(dfd, "f", buf, 3) == 2 && strcmp(buf, "he") == 0);
        CHECK(small_file_read(dfd, "missing", buf, sizeof(buf)) == -ENOENT);
        CHECK(symlinkat("f", dfd, "link") == 0);
        CHECK(small_file_write(dfd, "link", "x", 0, 0) == -ELOOP); /* never through a link */
        unlinkat(dfd, "link", 0);
        unlinkat(dfd, "f", 0);
        close(dfd);
        rmdir(dir);
}

/* A child that was given pipe ends at 0..2 with everything else closed and
 * signals reset reports what it sees on its stdout. */
static void test_child(void) {
        int in[2], out[2], err[2], status;
        char buf[256] = "";
        pid_t pid, self = getpid();
        ssize_t n;

        CHECK(pipe(in) == 0 && pipe2(out, O_CLOEXEC) == 0 && pipe(err) == 0);
        signal(SIGUSR1, SIG_IGN);
        pid = fork();
        if (pid == 0) {
                int fds[3] = {out[1], in[0], err[1]}; /* deliberately crossed: 0<-out, 1<-in */
                struct child_setup c = {.fds = fds, .n_fds = 3, .first_fd = 0, .new_group = true, .parent = self};
                struct sigaction sa;
                int open_fds = 0;

                /* Put 1 where 0 must go and 0 where 1 must go. */
                fds[0] = in[0];
                fds[1] = out[1];
                if (child_after_fork(&c) < 0)
                        _exit(2);
                for (int fd = 3; fd < 1024; fd++)
                        open_fds += fcntl(fd, F_GETFD) >= 0;
                sigaction(SIGUSR1, NULL, &sa);
                dprintf(1, "fds=%d cloexec=%d usr1=%s pgid=%d", open_fds, fcntl(1, F_GETFD) & FD_CLOEXEC,
                        sa.sa_handler == SIG_DFL ? "dfl" : "other", getpgid(0) == getpid());
                _exit(0);
        }
        signal(SIGUSR1, SIG_DFL);
        close(in[0]);
        close(out[1]);
        close(err[1]);
        n = read(out[0], buf, sizeof(buf) - 1);
        CHECK(n > 0);
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        CHECK(strcmp(buf, "fds=0 cloexec=0 usr1=dfl pgid=1") == 0);
        if (strcmp(buf, "fds=0 cloexec=0 usr1=dfl pgid=1") != 0)
                fprintf(stderr, "child saw: %s\n", buf);
        close(in[1]);
        close(out[0]);
        close(err[0]);
        /* A parent that is not ours: refused. */
        pid = fork();
        if (pid == 0) {
                struct child_setup c = {.parent = 1};
                _exit(child_after_fork(&c) == -ESRCH ? 0 : 1);
        }
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Is fd open, and the same file as other? */
static int same_file(int fd, int other) {
        struct stat a, b;

        return fstat(fd, &a) == 0 && fstat(other, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

static void test_fdpass(void) {
        int sv[2], fds[FDPASS_MAX + 2], got[4], devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        char buf[16];
        size_t n_got = 99;

        CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0 && devnull >= 0);
        /* Two descriptors (a -1 among them is skipped), one taken: the
         * other is closed, the taken one is close-on-exec and the file. */
        fds[0] = devnull;
        fds[1] = -1;
        fds[2] = devnull;
        CHECK(fdpass_send(sv[0], "ab", 2, fds, 3, MSG_NOSIGNAL) == 2);
        CHECK(fdpass_recv(sv[1], buf, sizeof(buf), got, 1, &n_got, 0) == 2 && n_got == 1 && !memcmp(buf, "ab", 2));
        CHECK(same_file(got[0], devnull) && (fcntl(got[0], F_GETFD) & FD_CLOEXEC));
        close(got[0]);
        /* None. */
        CHECK(fdpass_send(sv[0], "c", 1, NULL, 0, 0) == 1);
        CHECK(fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n_got, 0) == 1 && n_got == 0);
        /* A datagram longer than the buffer: refused, its descriptor closed. */
        CHECK(fdpass_send(sv[0], "0123456789", 10, &devnull, 1, 0) == 10);
        CHECK(fdpass_recv(sv[1], buf, 4, got, 4, &n_got, 0) == -EBADMSG && n_got == 0);
        /* More than FDPASS_MAX: the sender refuses. */
        for (int i = 0; i < FDPASS_MAX + 1; i++)
                fds[i] = devnull;
        CHECK(fdpass_send(sv[0], "x", 1, fds, FDPASS_MAX + 1, 0) == -EINVAL);
        /* Nothing waiting, non-blocking; then end of file. */
        CHECK(fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n_got, MSG_DONTWAIT) == -EAGAIN);
        close(sv[0]);
        CHECK(fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n_got, 0) == 0);
        close(sv[1]);
        close(devnull);
}

static int exits_seen;
static pid_t last_pid;
static int last_code;

static void on_exit_seen(pid_t pid, int status, const struct rusage *ru, void *data) {
        exits_seen++;
        last_pid = pid;
        last_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (data)
                loop_stop(data);
}

static pid_t spawn_exit(int code) {
        pid_t pid = fork();
        if (pid == 0)
                _exit(code);
        return pid;
}

static void wait_exited(pid_t pid) {
        siginfo_t si;
        waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT);
}

static void test_loop_children(void) {
        struct loop *l;
        pid_t a, b, many[300];

        CHECK(loop_new(&l) == 0);
        /* Watched before it exits. */
        a = spawn_exit(7);
        CHECK(loop_watch_child(l, a, on_exit_seen, NULL) == 0);
        wait_exited(a);
        loop_reap_children(l);
        CHECK(exits_seen == 1 && last_pid == a && last_code == 7);
        /* Exits before anybody watches it: kept, delivered at the next
         * iteration once watched. */
        b = spawn_exit(9);
        wait_exited(b);
        loop_reap_children(l);
        CHECK(exits_seen == 1);
        CHECK(loop_watch_child(l, b, on_exit_seen, l) == 0);
        CHECK(exits_seen == 1); /* not from inside loop_watch_child */
        CHECK(loop_run(l) == 0);
        CHECK(exits_seen == 2 && last_pid == b && last_code == 9);
        /* Unwatched: its exit is kept quietly, no callback. */
        a = spawn_exit(1);
        CHECK(loop_watch_child(l, a, on_exit_seen, NULL) == 0);
        loop_unwatch_child(l, a);
        wait_exited(a);
        loop_reap_children(l);
        CHECK(exits_seen == 2);
        /* Watched after its exit, then unwatched before the delivery: no
         * callback, and the exit is unclaimed again (taken here). */
        a = spawn_exit(4);
        wait_exited(a);
        loop_reap_children(l);
        CHECK(loop_watch_child(l, a, on_exit_seen, NULL) == 0);
        loop_unwatch_child(l, a);
        b = spawn_exit(5);
        CHECK(loop_watch_child(l, b, on_exit_seen, l) == 0);
        wait_exited(b);
        loop_reap_children(l);
        CHECK(exits_seen == 3 && last_pid == b); /* and not a's */
        {
                struct rusage ru;
                int status = 0;

                CHECK(loop_take_exit(l, a, &status, &ru) && WIFEXITED(status) && WEXITSTATUS(status) == 4);
                CHECK(!loop_take_exit(l, a, &status, &ru)); /* taken: gone */
                /* Taken before a watch: the owner handles it itself. */
                a = spawn_exit(6);
                wait_exited(a);
                loop_reap_children(l);
                CHECK(loop_take_exit(l, a, &status, &ru) && WEXITSTATUS(status) == 6);
                /* Not exited yet: false, and the watch gets the exit. */
                a = spawn_exit(8);
                CHECK(!loop_take_exit(l, a, &status, &ru));
                CHECK(loop_watch_child(l, a, on_exit_seen, NULL) == 0);
                CHECK(!loop_take_exit(l, a, &status, &ru));
                wait_exited(a);
                loop_reap_children(l);
                CHECK(exits_seen == 4 && last_pid == a && last_code == 8);
        }
        /* Many children: the table grows, each exit reaches its watch. */
        for (int i = 0; i < 300; i++) {
                many[i] = spawn_exit(i % 200);
                CHECK(loop_watch_child(l, many[i], on_exit_seen, NULL) == 0);
        }
        for (int i = 0; i < 300; i++)
                wait_exited(many[i]);
        loop_reap_children(l);
        CHECK(exits_seen == 304);
        /* More unclaimed exits than are kept: the oldest are dropped. */
        for (int i = 0; i < 100; i++) {
                many[i] = spawn_exit(3);
                wait_exited(many[i]);
        }
        loop_reap_children(l);
        CHECK(loop_watch_child(l, many[99], on_exit_seen, l) == 0);
        CHECK(loop_run(l) == 0 && exits_seen == 305 && last_pid == many[99]);
        loop_free(l);
}

/* ---- idle timers: early when nothing else is ready ------------------------ */

static struct {
        struct loop *l;
        int order[8], n;
        int pipe_rd;
        struct loop_timer *idle, *plain, *stopper;
} it;

static void idle_log(int what) {
        if (it.n < 8)
                it.order[it.n++] = what;
}

/* A timer is disarmed before its callback runs. */
static void on_idle_fired(void *data) { idle_log(loop_timer_due(it.idle) == 0 ? 1 : -1); }
static void on_plain_fired(void *data) { idle_log(3); }
static void on_stop(void *data) { loop_stop(it.l); }

/* Arms itself idle again and asks the loop to stop at once: the stop
 * (a timer due now) must come before the second firing. */
static int rearm_count;
static void on_idle_rearm(void *data) {
        if (++rearm_count < 1000)
                loop_timer_arm_idle(it.idle, now_ns() + 60ull * 1000 * 1000 * 1000);
        loop_timer_arm(it.stopper, now_ns());
}

static void on_pipe_ready(int fd, uint32_t events, void *data) {
        char c;

        if (read(fd, &c, 1) == 1)
                idle_log(2);
}

static void test_loop_idle_timers(void) {
        int p[2];
        uint64_t start, far;

        CHECK(loop_new(&it.l) == 0);
        CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
        it.pipe_rd = p[0];
        CHECK(loop_add_fd(it.l, p[0], EPOLLIN, on_pipe_ready, NULL) == 0);
        it.idle = loop_timer_new(it.l, on_idle_fired, NULL);
        it.plain = loop_timer_new(it.l, on_plain_fired, NULL);
        it.stopper = loop_timer_new(it.l, on_stop, NULL);
        start = now_ns();
        far = start + 60ull * 1000 * 1000 * 1000;
        /* A descriptor ready first: it is served, then the idle timer fires
         * at once (not in a minute); a plain timer armed for the same minute
         * does not. */
        CHECK(write(p[1], "x", 1) == 1);
        loop_timer_arm_idle(it.idle, far);
        loop_timer_arm(it.plain, far);
        loop_timer_arm(it.stopper, start + 50ull * 1000 * 1000);
        CHECK(loop_timer_due(it.plain) == far && loop_timer_due(it.idle) == far);
        CHECK(loop_run(it.l) == 0);
        CHECK(it.n == 2 && it.order[0] == 2 && it.order[1] == 1);
        CHECK(now_ns() - start < 30ull * 1000 * 1000 * 1000);
        CHECK(loop_timer_due(it.idle) == 0 && loop_timer_due(it.plain) == far);
        /* Disarmed, or armed again plainly: no early firing. */
        it.n = 0;
        loop_timer_arm_idle(it.idle, far);
        loop_timer_arm(it.idle, 0);
        CHECK(loop_timer_due(it.idle) == 0);
        loop_timer_arm_idle(it.plain, far);
        loop_timer_arm(it.plain, far);
        loop_timer_arm(it.stopper, now_ns() + 20ull * 1000 * 1000);
        CHECK(loop_run(it.l) == 0);
        CHECK(it.n == 0);
        /* Due before the loop is idle: fires once, at its time. */
        loop_timer_arm_idle(it.idle, now_ns());
        loop_timer_arm(it.stopper, now_ns() + 20ull * 1000 * 1000);
        CHECK(loop_run(it.l) == 0);
        CHECK(it.n == 1 && it.order[0] == 1);
        /* A callback that arms its timer idle again waits for the next idle
         * moment: timers due meanwhile run first. */
        loop_timer_free(it.idle);
        it.idle = loop_timer_new(it.l, on_idle_rearm, NULL);
        loop_timer_arm_idle(it.idle, now_ns() + 60ull * 1000 * 1000 * 1000);
        CHECK(loop_run(it.l) == 0);
        CHECK(rearm_count == 1);
        loop_timer_free(it.idle);
        loop_timer_free(it.plain);
        loop_timer_free(it.stopper);
        loop_del_fd(it.l, p[0]);
        close(p[0]);
        close(p[1]);
        loop_free(it.l);
}

int main(void) {
        test_text();
        test_list();
        test_smallfile();
        test_child();
        test_fdpass();
        test_loop_children();
        test_loop_idle_timers();
        return check_summary("common");
}
