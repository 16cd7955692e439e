/* The figures of DESIGN §6 that plain file I/O on a mounted securerfs can
 * measure.  scripts/bench mounts the file systems and calls this once per
 * figure; each mode prints "key value" lines that the script tabulates.
 *
 *   roundtrip MNT rt [ITERATIONS]     1+1 through the files, two client styles,
 *                                     and through eval kept open
 *   roundtrip MNT new [RUNS]          new session (clone) to its first result
 *   roundtrip MNT timeout [RUNS]      return after a timeout's deadline
 *   roundtrip MNT pss DAEMON_PID      idle session memory, 1 and 8 sessions
 *   roundtrip MNT concurrent [N]      N sessions running at once
 *   roundtrip MNT floor KEY [N]       a pwrite and a pread of MNT/f, eval's
 *                                     two requests, on bench/floorfs.c
 *
 * Timing uses CLOCK_MONOTONIC around the system calls only. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *mnt;

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fputs("roundtrip: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(1);
}

static double now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

/* Percentile p (0..100) of n sorted values, nearest rank. */
static double percentile(const double *sorted, size_t n, double p) {
        size_t rank = (size_t)(p / 100.0 * (double)n + 0.5);
        if (rank < 1)
                rank = 1;
        if (rank > n)
                rank = n;
        return sorted[rank - 1];
}

static void session_path(char *buf, size_t len, const char *session, const char *file) {
        snprintf(buf, len, "%s/sessions/%s/%s", mnt, session, file);
}

/* Whole file into buf (NUL-terminated); returns its length or dies. */
static size_t read_file(const char *path, char *buf, size_t len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        size_t got = 0;
        if (fd < 0)
                die("open %s: %s", path, strerror(errno));
        for (;;) {
                ssize_t n = read(fd, buf + got, len - 1 - got);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        die("read %s: %s", path, strerror(errno));
                }
                if (n == 0 || got + (size_t)n >= len - 1) {
                        got += (size_t)n;
                        break;
                }
                got += (size_t)n;
        }
        close(fd);
        buf[got] = '\0';
        return got;
}

/* open(O_WRONLY|O_TRUNC), one write, close: the run starts on close. */
static int write_file(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        size_t n = strlen(text);
        if (fd < 0)
                return -errno;
        if (write(fd, text, n) != (ssize_t)n) {
                int e = errno;
                close(fd);
                return -e;
        }
        if (close(fd) < 0)
                return -errno;
        return 0;
}

static void new_session(char *name, size_t len) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/clone", mnt);
        read_file(path, name, len);
        name[strcspn(name, " \t\r\n")] = '\0';
        if (!*name)
                die("clone gave an empty name");
}

static void close_session(const char *name) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/sessions/%s", mnt, name);
        if (rmdir(path) < 0)
                fprintf(stderr, "roundtrip: rmdir %s: %s\n", path, strerror(errno));
}

static void run_expect(const char *session, const char *code, const char *expect) {
        char in[4096], out[4096], buf[65536];
        int r;
        session_path(in, sizeof(in), session, "input");
        session_path(out, sizeof(out), session, "output");
        if ((r = write_file(in, code)) < 0)
                die("write %s: %s", in, strerror(-r));
        read_file(out, buf, sizeof(buf));
        if (expect && strcmp(buf, expect) != 0)
                die("%s gave \"%s\", expected \"%s\"", code, buf, expect);
}

static void print_stats(const char *key, double *v, size_t n, double scale) {
        qsort(v, n, sizeof(*v), cmp_double);
        printf("%s_p50 %.1f\n", key, percentile(v, n, 50) / scale);
        printf("%s_p90 %.1f\n", key, percentile(v, n, 90) / scale);
        printf("%s_p99 %.1f\n", key, percentile(v, n, 99) / scale);
        printf("%s_n %zu\n", key, n);
}

/* (a) 1+1 through the files. */
static void mode_roundtrip(size_t iterations) {
        char name[256], in[4096], out[4096], buf[256];
        double *close_reopen = calloc(iterations, sizeof(double));
        double *keep_open = calloc(iterations, sizeof(double));
        double *eval = calloc(iterations, sizeof(double));
        const size_t warmup = 50;
        int out_fd, eval_fd;
        char eval_path[4096], res[65536];

        if (!close_reopen || !keep_open || !eval)
                die("out of memory");
        new_session(name, sizeof(name));
        session_path(in, sizeof(in), name, "input");
        session_path(out, sizeof(out), name, "output");

        for (size_t i = 0; i < warmup + iterations; i++) {
                double t0 = now_us();
                int fd = open(in, O_WRONLY | O_TRUNC | O_CLOEXEC);
                if (fd < 0 || write(fd, "1+1", 3) != 3 || close(fd) < 0)
                        die("input: %s", strerror(errno));
                fd = open(out, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        die("open output: %s", strerror(errno));
                ssize_t n = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                double t1 = now_us();
                if (n != 2 || memcmp(buf, "2\n", 2) != 0)
                        die("1+1 gave %zd bytes: \"%.*s\"", n, (int)(n > 0 ? n : 0), buf);
                if (i >= warmup)
                        close_reopen[i - warmup] = t1 - t0;
        }

        out_fd = open(out, O_RDONLY | O_CLOEXEC);
        if (out_fd < 0)
                die("open output: %s", strerror(errno));
        for (size_t i = 0; i < warmup + iterations; i++) {
                double t0 = now_us();
                int fd = open(in, O_WRONLY | O_TRUNC | O_CLOEXEC);
                if (fd < 0 || write(fd, "1+1", 3) != 3 || close(fd) < 0)
                        die("input: %s", strerror(errno));
                ssize_t n = pread(out_fd, buf, sizeof(buf) - 1, 0);
                double t1 = now_us();
                if (n != 2 || memcmp(buf, "2\n", 2) != 0)
                        die("1+1 (pread) gave %zd bytes: \"%.*s\"", n, (int)(n > 0 ? n : 0), buf);
                if (i >= warmup)
                        keep_open[i - warmup] = t1 - t0;
        }
        close(out_fd);

        /* eval kept open: a pwrite and a pread of one descriptor a run (the
         * result fits one read: result.json of 1+1 is a few hundred bytes,
         * and a short read is the whole of it). */
        session_path(eval_path, sizeof(eval_path), name, "eval");
        eval_fd = open(eval_path, O_RDWR | O_CLOEXEC);
        if (eval_fd < 0)
                die("open eval: %s", strerror(errno));
        for (size_t i = 0; i < warmup + iterations; i++) {
                double t0 = now_us();
                if (pwrite(eval_fd, "1+1", 3, 0) != 3)
                        die("eval write: %s", strerror(errno));
                ssize_t n = pread(eval_fd, res, sizeof(res) - 1, 0);
                double t1 = now_us();
                if (n <= 0 || n >= (ssize_t)sizeof(res) - 1)
                        die("eval read gave %zd: %s", n, n < 0 ? strerror(errno) : "");
                res[n] = '\0';
                if (!strstr(res, "\"output\":\"2\""))
                        die("1+1 through eval gave %s", res);
                if (i >= warmup)
                        eval[i - warmup] = t1 - t0;
        }
        close(eval_fd);
        close_session(name);

        print_stats("rt_us", close_reopen, iterations, 1);
        print_stats("rt_pread_us", keep_open, iterations, 1);
        print_stats("rt_eval_us", eval, iterations, 1);
        free(close_reopen);
        free(keep_open);
        free(eval);
}

/* (b) open+read clone, 1+1 into its input, read its output. */
static void mode_new_session(size_t runs) {
        double *v = calloc(runs, sizeof(double));
        char names[64][256];
        if (!v || runs > 64)
                die("at most 64 runs");
        /* one untimed session first: the zygote and the pool are up */
        new_session(names[0], sizeof(names[0]));
        run_expect(names[0], "1+1", "2\n");
        close_session(names[0]);
        for (size_t i = 0; i < runs; i++) {
                usleep(200 * 1000); /* let a pool refill, as between real clients */
                double t0 = now_us();
                new_session(names[i], sizeof(names[i]));
                run_expect(names[i], "1+1", "2\n");
                v[i] = now_us() - t0;
        }
        for (size_t i = 0; i < runs; i++)
                close_session(names[i]);
        print_stats("new_ms", v, runs, 1000);
        free(v);
}

/* (c) timeout=1, Sys.sleep(10): write to output readable, minus 1 s. */
static void mode_timeout(size_t runs) {
        char name[256], path[4096], buf[65536];
        double *v = calloc(runs, sizeof(double));
        int r;
        if (!v)
                die("out of memory");
        new_session(name, sizeof(name));
        session_path(path, sizeof(path), name, "timeout");
        if ((r = write_file(path, "1")) < 0)
                die("write timeout: %s", strerror(-r));
        run_expect(name, "y <- 7", "7\n");
        for (size_t i = 0; i < runs; i++) {
                char in[4096], out[4096];
                session_path(in, sizeof(in), name, "input");
                session_path(out, sizeof(out), name, "output");
                double t0 = now_us();
                if ((r = write_file(in, "Sys.sleep(10)")) < 0)
                        die("write input: %s", strerror(-r));
                read_file(out, buf, sizeof(buf));
                v[i] = now_us() - t0 - 1e6;
                session_path(path, sizeof(path), name, "result.json");
                read_file(path, buf, sizeof(buf));
                if (!strstr(buf, "\"timeout\""))
                        die("Sys.sleep(10) with timeout 1 did not time out: %s", buf);
        }
        /* state kept? */
        char in[4096], out[4096];
        session_path(in, sizeof(in), name, "input");
        session_path(out, sizeof(out), name, "output");
        if ((r = write_file(in, "y")) < 0)
                die("write input: %s", strerror(-r));
        read_file(out, buf, sizeof(buf));
        printf("timeout_state_kept %s\n", strcmp(buf, "7\n") == 0 ? "yes" : "no");
        close_session(name);
        print_stats("timeout_ms", v, runs, 1000);
        free(v);
}

/* Worker pids of the daemon: its children running securerfs-worker, the
 * oldest (the zygote) left out.  Returns how many were stored. */
static size_t session_workers(long daemon, long *pids, size_t max) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        struct { long pid; unsigned long long start; } found[1024];
        size_t n = 0;
        if (!d)
                die("opendir /proc: %s", strerror(errno));
        while ((e = readdir(d)) && n < 1024) {
                char path[300], buf[4096], *p;
                long pid = strtol(e->d_name, &p, 10);
                long ppid;
                unsigned long long start = 0;
                char state;
                if (*p || pid <= 0)
                        continue;
                snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                ssize_t len = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (len <= 0)
                        continue;
                buf[len] = '\0';
                p = strrchr(buf, ')');
                if (!p || sscanf(p + 2, "%c %ld", &state, &ppid) != 2 || ppid != daemon || state == 'Z')
                        continue;
                /* field 22 (starttime): skip 19 more fields after ppid */
                char *q = p + 2;
                for (int f = 0; f < 19 && q; f++)
                        q = strchr(q + 1, ' ');
                if (q)
                        start = strtoull(q + 1, NULL, 10);
                snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                len = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (len <= 0)
                        continue;
                buf[len] = '\0';
                if (!strstr(buf, "securerfs-worker"))
                        continue;
                found[n].pid = pid;
                found[n].start = start;
                n++;
        }
        closedir(d);
        /* drop the oldest (the zygote) */
        size_t oldest = 0;
        for (size_t i = 1; i < n; i++)
                if (found[i].start < found[oldest].start ||
                    (found[i].start == found[oldest].start && found[i].pid < found[oldest].pid))
                        oldest = i;
        size_t k = 0;
        for (size_t i = 0; i < n && k < max; i++)
                if (i != oldest)
                        pids[k++] = found[i].pid;
        return k;
}

static long pss_kib(long pid) {
        char path[64], line[256];
        long total = 0, v;
        snprintf(path, sizeof(path), "/proc/%ld/smaps_rollup", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Pss: %ld kB", &v) == 1)
                        total += v;
        fclose(f);
        return total;
}

static void report_pss(long daemon, const char *key) {
        long pids[1024], sum = 0;
        size_t n = session_workers(daemon, pids, 1024);
        for (size_t i = 0; i < n; i++) {
                long k = pss_kib(pids[i]);
                if (k < 0)
                        die("smaps_rollup of %ld unreadable", pids[i]);
                sum += k;
        }
        if (n == 0)
                die("no session worker found under daemon %ld", daemon);
        printf("%s_workers %zu\n", key, n);
        printf("%s_total_mib %.1f\n", key, (double)sum / 1024.0);
        printf("%s_per_session_mib %.1f\n", key, (double)sum / 1024.0 / (double)n);
}

/* (e) PSS of idle session workers (mount with pool=0 so that only sessions
 * have workers). */
static void mode_pss(long daemon) {
        char names[8][256];
        new_session(names[0], sizeof(names[0]));
        run_expect(names[0], "1+1", "2\n");
        usleep(300 * 1000);
        report_pss(daemon, "pss1");
        for (int i = 1; i < 8; i++) {
                new_session(names[i], sizeof(names[i]));
                run_expect(names[i], "1+1", "2\n");
        }
        usleep(300 * 1000);
        report_pss(daemon, "pss8");
        for (int i = 0; i < 8; i++)
                close_session(names[i]);
}

struct concurrent_arg {
        pthread_barrier_t *barrier;
        char name[256];
        int ok;
        char why[256];
};

static void *concurrent_thread(void *p) {
        struct concurrent_arg *a = p;
        char in[4096], out[4096], buf[4096];
        int r;
        pthread_barrier_wait(a->barrier);
        session_path(in, sizeof(in), a->name, "input");
        session_path(out, sizeof(out), a->name, "output");
        if ((r = write_file(in, "Sys.sleep(0.2); 1+1")) < 0) {
                snprintf(a->why, sizeof(a->why), "write input: %s", strerror(-r));
                return NULL;
        }
        int fd = open(out, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                snprintf(a->why, sizeof(a->why), "open output: %s", strerror(errno));
                return NULL;
        }
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n != 2 || memcmp(buf, "2\n", 2) != 0) {
                session_path(out, sizeof(out), a->name, "error");
                read_file(out, buf, sizeof(buf));
                snprintf(a->why, sizeof(a->why), "error: %.200s", buf);
                return NULL;
        }
        a->ok = 1;
        return NULL;
}

/* (f) N sessions, each Sys.sleep(0.2); 1+1 at once. */
static void mode_concurrent(size_t n) {
        struct concurrent_arg *args = calloc(n, sizeof(*args));
        pthread_t *threads = calloc(n, sizeof(*threads));
        pthread_barrier_t barrier;
        size_t ok = 0;
        if (!args || !threads)
                die("out of memory");
        double t0 = now_us();
        for (size_t i = 0; i < n; i++)
                new_session(args[i].name, sizeof(args[i].name));
        double t_created = now_us();
        pthread_barrier_init(&barrier, NULL, (unsigned)n);
        for (size_t i = 0; i < n; i++) {
                args[i].barrier = &barrier;
                if (pthread_create(&threads[i], NULL, concurrent_thread, &args[i]) != 0)
                        die("pthread_create failed");
        }
        double t_run = now_us();
        for (size_t i = 0; i < n; i++)
                pthread_join(threads[i], NULL);
        double t1 = now_us();
        for (size_t i = 0; i < n; i++) {
                if (args[i].ok)
                        ok++;
                else
                        fprintf(stderr, "roundtrip: session %s: %s\n", args[i].name, args[i].why);
                close_session(args[i].name);
        }
        printf("concurrent_sessions %zu\n", n);
        printf("concurrent_ok %zu\n", ok);
        printf("concurrent_create_ms %.1f\n", (t_created - t0) / 1000);
        printf("concurrent_run_ms %.1f\n", (t1 - t_run) / 1000);
        pthread_barrier_destroy(&barrier);
        free(args);
        free(threads);
}

/* The machine's floor: eval's two requests on a file system that does
 * nothing else (bench/floorfs.c mounted at mnt), printed as KEY_us. */
static void mode_floor(const char *key, size_t iterations) {
        double *v = calloc(iterations, sizeof(double));
        const size_t warmup = 50;
        char path[4096], res[4096];
        int fd;

        if (!v)
                die("out of memory");
        snprintf(path, sizeof(path), "%s/f", mnt);
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                die("open %s: %s", path, strerror(errno));
        for (size_t i = 0; i < warmup + iterations; i++) {
                double t0 = now_us();
                if (pwrite(fd, "1+1", 3, 0) != 3)
                        die("floor write: %s", strerror(errno));
                ssize_t n = pread(fd, res, sizeof(res) - 1, 0);
                double t1 = now_us();
                if (n <= 0)
                        die("floor read gave %zd: %s", n, n < 0 ? strerror(errno) : "");
                if (i >= warmup)
                        v[i - warmup] = t1 - t0;
        }
        close(fd);
        snprintf(path, sizeof(path), "%s_us", key);
        print_stats(path, v, iterations, 1);
        free(v);
}

int main(int argc, char **argv) {
        if (argc < 3)
                die("usage: roundtrip MNT rt|new|timeout|pss|concurrent [N] | MNT floor KEY [N]");
        mnt = argv[1];
        const char *mode = argv[2];
        long n = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (strcmp(mode, "rt") == 0)
                mode_roundtrip(n > 0 ? (size_t)n : 2000);
        else if (strcmp(mode, "new") == 0)
                mode_new_session(n > 0 ? (size_t)n : 20);
        else if (strcmp(mode, "timeout") == 0)
                mode_timeout(n > 0 ? (size_t)n : 5);
        else if (strcmp(mode, "pss") == 0)
                mode_pss(n);
        else if (strcmp(mode, "concurrent") == 0)
                mode_concurrent(n > 0 ? (size_t)n : 64);
        else if (strcmp(mode, "floor") == 0 && argc > 3)
                mode_floor(argv[3], argc > 4 && atol(argv[4]) > 0 ? (size_t)atol(argv[4]) : 2000);
        else
                die("unknown mode %s", mode);
        return 0;
}
