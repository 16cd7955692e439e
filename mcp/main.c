/* securerfs-mcp: securerfs as a Model Context Protocol server on stdio.
 * Parses options and runs the server (mcp/server.h). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "rsession.h"
#include "server.h"

static const char usage_text[] = "usage: securerfs-mcp [--mount MNT] [--session NAME] [--timeout S] [-o OPTS] [-v|-q]\n"
                                 "\n"
                                 "Serve the Model Context Protocol on stdin/stdout (newline-delimited JSON-RPC 2.0),\n"
                                 "running R code in a sandboxed, persistent securerfs session.  Logs go to stderr.\n"
                                 "\n"
                                 "  --mount MNT     use the securerfs mounted at MNT (default: $SECURERFS_MOUNT;\n"
                                 "                  unset: start a private securerfs, unmounted at exit)\n"
                                 "  --session NAME  attach to the session NAME, making it if needed; it outlives\n"
                                 "                  this server (default: a new session, closed when stdin closes)\n"
                                 "  --timeout S     seconds per run (default: the mount's, 30; 0: none)\n"
                                 "  -o OPTS         more securerfs options for a private mount (e.g. r_libs=/srv/R)\n"
                                 "  -v, -q          more, less logging\n"
                                 "  --help, --version\n"
                                 "\n"
                                 "A client's configuration: {\"command\": \"securerfs-mcp\"}\n";

int main(int argc, char **argv) {
        static const struct option longopts[] = {{"mount", required_argument, NULL, 'm'},
                                                 {"session", required_argument, NULL, 's'},
                                                 {"timeout", required_argument, NULL, 't'},
                                                 {"options", required_argument, NULL, 'o'},
                                                 {"verbose", no_argument, NULL, 'v'},
                                                 {"quiet", no_argument, NULL, 'q'},
                                                 {"help", no_argument, NULL, 'h'},
                                                 {"version", no_argument, NULL, 'V'},
                                                 {NULL, 0, NULL, 0}};
        struct server_config cfg = {.timeout_s = -1};
        const char *env = getenv("SECURERFS_MOUNT");
        int c;

        log_set_prefix("securerfs-mcp");
        if (env && *env)
                cfg.mount = env;
        while ((c = getopt_long(argc, argv, "m:s:t:o:vqh", longopts, NULL)) != -1) {
                char *end;
                switch (c) {
                case 'm':
                        cfg.mount = optarg;
                        break;
                case 's':
                        if (!rsession_name_ok(optarg)) {
                                fprintf(stderr,
                                        "securerfs-mcp: bad session name \"%s\": 1-64 of A-Z a-z 0-9 . _ -, not "
                                        "starting with .\n",
                                        optarg);
                                return 2;
                        }
                        cfg.session = optarg;
                        break;
                case 't':
                        errno = 0;
                        cfg.timeout_s = strtod(optarg, &end);
                        if (errno || end == optarg || *end || !isfinite(cfg.timeout_s) || cfg.timeout_s < 0 ||
                            cfg.timeout_s > 1e7) {
                                fprintf(stderr, "securerfs-mcp: bad --timeout \"%s\": seconds, 0 to 1e7\n", optarg);
                                return 2;
                        }
                        break;
                case 'o':
                        cfg.daemon_options = optarg;
                        break;
                case 'v':
                        log_max_level = LOG_DEBUG;
                        break;
                case 'q':
                        log_max_level = LOG_WARN;
                        break;
                case 'h':
                        fputs(usage_text, stdout);
                        return 0;
                case 'V':
                        printf("securerfs-mcp %s\n", SECURERFS_VERSION);
                        return 0;
                default:
                        fputs(usage_text, stderr);
                        return 2;
                }
        }
        if (optind < argc) {
                fputs(usage_text, stderr);
                return 2;
        }
        if (cfg.mount && !*cfg.mount)
                cfg.mount = NULL;
        if (cfg.session && !cfg.mount)
                log_warn("--session %s on a private mount: the session ends with this server's mount", cfg.session);
        return server_run(&cfg);
}
