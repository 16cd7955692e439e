#include "tools.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"
#include "json_cleanup.h"
#include "log.h"
#include "macros.h"
#include "utf8.h"
#include "workspace.h"

/* list_files: at most this many entries. */
#define LIST_MAX 1000
/* The host tools named in execute_r_code's description. */
#define HOST_TOOLS_MAX 100
#define HOST_TOOL_DESCRIPTION_MAX 1000

static const char *const tool_names[] = {"execute_r_code", "list_files", "read_file", "write_file", "restart_session"};

bool tools_known(const char *name) {
        for (size_t i = 0; i < ARRAY_SIZE(tool_names); i++)
                if (strcmp(tool_names[i], name) == 0)
                        return true;
        return false;
}

size_t utf8_cut(const char *s, size_t len, size_t max) {
        if (len <= max)
                return len;
        /* Back off over continuation bytes (10xxxxxx) to a character start. */
        while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
                max--;
        return max;
}

json_t *content_text(const char *text) {
        return json_pack("{s:s, s:s}", "type", "text", "text", text);
}

static json_t *content_textn(const char *text, size_t len) {
        json_t *t = json_stringn(text, len);
        if (!t) { /* not UTF-8: never expected from the mount, but never fatal */
                _cleanup_free_ char *clean = utf8_sanitize_dup(text, len, &len);
                t = clean ? json_stringn(clean, len) : NULL;
        }
        return t ? json_pack("{s:s, s:o}", "type", "text", "text", t) : NULL;
}

static json_t *tool_result(json_t *content, bool is_error, json_t *structured) {
        json_t *r = json_pack("{s:o}", "content", content ? content : json_array());

        if (r && is_error)
                json_object_set_new(r, "isError", json_true());
        if (r && structured)
                json_object_set_new(r, "structuredContent", structured);
        else
                json_decref(structured);
        return r;
}

static void reply_tool_error(struct server *s, struct request *req, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void reply_tool_error(struct server *s, struct request *req, const char *fmt, ...) {
        char msg[2048];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        server_reply_result(s, req, tool_result(json_pack("[o]", content_text(msg)), true, NULL));
}

/* Bad arguments: a tool error the model can read and correct from
 * 2025-11-25 on (SEP-1303), a JSON-RPC invalid params error before. */
static void reply_arg_error(struct server *s, struct request *req, const char *msg) {
        if (s->version->features & MCP_F_ARG_ERRORS_AS_RESULTS)
                reply_tool_error(s, req, "Invalid arguments: %s", msg);
        else
                server_reply_error(s, req, RPC_INVALID_PARAMS, msg);
}

/* ---- tools/list ------------------------------------------------------------- */

static json_t *annotations(const char *title, bool read_only, bool destructive, bool idempotent, bool open_world) {
        json_t *a =
                json_pack("{s:s, s:b, s:b}", "title", title, "readOnlyHint", read_only, "openWorldHint", open_world);

        /* destructiveHint and idempotentHint mean something only when the
         * tool is not read-only (the specification's wording). */
        if (a && !read_only) {
                json_object_set_new(a, "destructiveHint", json_boolean(destructive));
                json_object_set_new(a, "idempotentHint", json_boolean(idempotent));
        }
        return a;
}

static json_t *tool_def(const struct server *s, const char *name, const char *title, const char *description,
                        json_t *input_schema, json_t *output_schema, json_t *annot) {
        unsigned f = s->version->features;
        json_t *t = json_pack("{s:s, s:s, s:o}", "name", name, "description", description, "inputSchema", input_schema);

        if (!t) {
                json_decref(output_schema);
                json_decref(annot);
                return NULL;
        }
        if (f & MCP_F_STRUCTURED) {
                json_object_set_new(t, "title", json_string(title));
                if (output_schema)
                        json_object_set_new(t, "outputSchema", output_schema);
        } else {
                json_decref(output_schema);
        }
        if (f & MCP_F_ANNOTATIONS)
                json_object_set_new(t, "annotations", annot);
        else
                json_decref(annot);
        return t;
}

static json_t *execute_output_schema(void) {
        return json_pack(
                "{s:s, s:{s:{s:s, s:[sssss], s:s}, s:{s:s}, s:{s:[ss], s:s}, s:{s:s, s:s}, s:{s:s, s:s},"
                " s:{s:s, s:{s:s}, s:s}, s:{s:s}, s:{s:s, s:{s:s}, s:s}, s:{s:s, s:s}, s:{s:s, s:s}},"
                " s:[sss]}",
                "type", "object", "properties", "status", "type", "string", "enum", "ok", "error", "timeout", "killed",
                "crashed", "description",
                "how the run ended: ok; error (R error or syntax error, state kept); timeout (interrupted at the "
                "deadline, state kept); killed or crashed (a fresh R process replaced it: state lost)",
                "value", "description",
                "the value of the last expression as JSON (jsonlite's conventions: "
                "data frames as arrays of rows, NA as null); null after an error or when it has no JSON form",
                "output", "type", "string", "null", "description", "the value as text, as in the text content", "error",
                "type", "string", "description", "the error message; empty on success", "console", "type", "string",
                "description", "what the code printed (cat, print, message, warnings)", "warnings", "type", "array",
                "items", "type", "string", "description", "the run's warnings", "elapsed_ms", "type", "number", "files",
                "type", "array", "items", "type", "string", "description",
                "workspace files the run created or changed, relative paths", "limit", "type", "string", "description",
                "the resource limit that ended the run, if one did", "value_note", "type", "string", "description",
                "why value is null although the run succeeded", "required", "status", "value", "console");
}

static json_t *list_output_schema(void) {
        return json_pack("{s:s, s:{s:{s:s, s:{s:s, s:{s:{s:s}, s:{s:s, s:[ssss]}, s:{s:s}, s:{s:s}}, s:[ss]}},"
                         " s:{s:s}}, s:[ss]}",
                         "type", "object", "properties", "entries", "type", "array", "items", "type", "object",
                         "properties", "path", "type", "string", "type", "type", "string", "enum", "file", "directory",
                         "symlink", "other", "size", "type", "integer", "target", "type", "string", "required", "path",
                         "type", "truncated", "type", "boolean", "required", "entries", "truncated");
}

/* execute_r_code's description: what it does, then the host tools the
 * session defines, as the seed vignette's system prompt lists them. */
static char *execute_description(struct server *s, bool *has_host_tools) {
        _cleanup_json_ json_t *tools = s->mount ? rsession_host_tools(s->rs, s->mount, HOST_TOOLS_MAX) : NULL;
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        size_t i;
        json_t *t;

        if (!f)
                return NULL;
        fputs("Run R code in a sandboxed, persistent R session and return the value of the last expression as "
              "text (securer's formatting: a scalar as itself, a data frame printed and cut after 30 rows, other "
              "values printed and cut after 50 lines), with what the code printed. Variables, functions and "
              "loaded packages persist between calls; restart_session clears them. The session runs in an OS "
              "sandbox: no network, no host files. Its working directory is a workspace kept between calls "
              "(list_files, read_file and write_file reach the same files): read and write files by relative "
              "name. To show a plot, write it to a PNG or JPEG file, e.g. png(\"plot.png\"); plot(x); dev.off() "
              "(a plot drawn without opening a device is saved as Rplot001.png): the images a call creates come "
              "back with its result.",
              f);
        {
                /* Before the session is open: what it will be given. */
                double secs = s->rs ? s->rs->timeout_s : s->cfg.timeout_s >= 0 ? s->cfg.timeout_s : s->mount_timeout_s;
                if (secs > 0)
                        fprintf(f,
                                " A call may run for %g seconds; then it is interrupted and the session's state "
                                "is kept.",
                                secs);
        }
        *has_host_tools = json_array_size(tools) > 0;
        if (*has_host_tools) {
                fputs("\n\nFunctions available inside R that run on the host (call them from your R code):", f);
                json_array_foreach(tools, i, t) {
                        json_t *args = json_object_get(t, "args"), *type;
                        const char *desc = json_string_value(json_object_get(t, "description")), *k;
                        size_t dlen = utf8_cut(desc, strlen(desc), HOST_TOOL_DESCRIPTION_MAX);
                        bool first = true;

                        fprintf(f, "\n- %s(", json_string_value(json_object_get(t, "name")));
                        json_object_foreach(args, k, type) {
                                fprintf(f, "%s%s", first ? "" : ", ", k);
                                first = false;
                        }
                        fprintf(f, "): %.*s%s", (int)dlen, desc, dlen < strlen(desc) ? "..." : "");
                        if (json_object_size(args) > 0) {
                                first = true;
                                fputs(" Arguments:", f);
                                json_object_foreach(args, k, type) {
                                        const char *ty = json_string_value(type);
                                        fprintf(f, "%s %s (%s)", first ? "" : ",", k, *ty ? ty : "any type");
                                        first = false;
                                }
                                fputc('.', f);
                        }
                }
        }
        if (fclose(f) != 0) {
                free(out);
                return NULL;
        }
        return out;
}

json_t *tools_list(struct server *s) {
        _cleanup_free_ char *exec_desc = NULL;
        bool host_tools = false;
        json_t *tools;

        exec_desc = execute_description(s, &host_tools);
        tools = json_pack(
                "[o, o, o, o, o]",
                tool_def(s, "execute_r_code", "Run R code", exec_desc ? exec_desc : "Run R code",
                         json_pack("{s:s, s:{s:{s:s, s:s}}, s:[s], s:b}", "type", "object", "properties", "code",
                                   "type", "string", "description",
                                   "R code to run, as one string. The value of the last expression is returned.",
                                   "required", "code", "additionalProperties", 0),
                         execute_output_schema(),
                         /* Code can change or delete workspace files, and host
                          * tools reach whatever the host lets them: open world
                          * only when there are host tools (the sandbox itself
                          * has no network). */
                         annotations("Run R code", false, true, false, host_tools)),
                tool_def(s, "list_files", "List workspace files",
                         "List the files in the R session's workspace (its working directory), or in a directory "
                         "of it, with their sizes. Paths are relative to the workspace.",
                         json_pack("{s:s, s:{s:{s:s, s:s}, s:{s:s, s:s}}, s:b}", "type", "object", "properties", "path",
                                   "type", "string", "description",
                                   "a directory relative to the workspace (default: the workspace itself)", "recursive",
                                   "type", "boolean", "description",
                                   "also list what subdirectories hold (default false)", "additionalProperties", 0),
                         list_output_schema(), annotations("List workspace files", true, false, true, false)),
                tool_def(s, "read_file", "Read a workspace file",
                         "Read a file of the R session's workspace: text comes back as text (at most 1 MiB), a "
                         "PNG, JPEG, GIF or WebP image as an image (at most 2 MiB).",
                         json_pack("{s:s, s:{s:{s:s, s:s}}, s:[s], s:b}", "type", "object", "properties", "path",
                                   "type", "string", "description", "the file, relative to the workspace", "required",
                                   "path", "additionalProperties", 0),
                         NULL, annotations("Read a workspace file", true, false, true, false)),
                tool_def(s, "write_file", "Write a workspace file",
                         "Write a file into the R session's workspace, replacing it if it exists (directories are "
                         "made as needed), so that R code can read it by its relative name, e.g. "
                         "read.csv(\"data.csv\"). The workspace has a size limit.",
                         json_pack("{s:s, s:{s:{s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:[ss], s:s}}, s:[ss], s:b}", "type",
                                   "object", "properties", "path", "type", "string", "description",
                                   "the file, relative to the workspace", "content", "type", "string", "description",
                                   "the file's content", "encoding", "type", "string", "enum", "utf-8", "base64",
                                   "description",
                                   "utf-8 (default): content is the text; base64: content is the bytes in base64",
                                   "required", "path", "content", "additionalProperties", 0),
                         NULL, annotations("Write a workspace file", false, true, true, false)),
                tool_def(s, "restart_session", "Restart the R session",
                         "Restart the R session: a fresh R process, with every variable and loaded package gone. "
                         "The workspace's files are kept.",
                         json_pack("{s:s, s:{}, s:b}", "type", "object", "properties", "additionalProperties", 0), NULL,
                         annotations("Restart the R session", false, true, true, false)));
        return tools ? json_pack("{s:o}", "tools", tools) : NULL;
}

/* ---- arguments ---------------------------------------------------------------- */

struct arg_spec {
        const char *name;
        json_type type;
        bool required;
};

/* Check args against spec: every required one there, each of its type,
 * none other.  Returns NULL or a message (in buf). */
static const char *check_args(json_t *args, const struct arg_spec *spec, size_t n, char *buf, size_t cap) {
        static const char *const type_names[] = {
                [JSON_OBJECT] = "an object",   [JSON_ARRAY] = "an array", [JSON_STRING] = "a string",
                [JSON_INTEGER] = "an integer", [JSON_REAL] = "a number",  [JSON_TRUE] = "a boolean",
                [JSON_FALSE] = "a boolean",    [JSON_NULL] = "null"};
        const char *k;
        json_t *v;

        for (size_t i = 0; i < n; i++) {
                v = json_object_get(args, spec[i].name);
                if (!v && spec[i].required) {
                        snprintf(buf, cap, "\"%s\" is required", spec[i].name);
                        return buf;
                }
                if (v && !(json_typeof(v) == spec[i].type || (spec[i].type == JSON_TRUE && json_is_boolean(v)))) {
                        snprintf(buf, cap, "\"%s\" must be %s", spec[i].name, type_names[spec[i].type]);
                        return buf;
                }
        }
        json_object_foreach(args, k, v) {
                size_t i;
                for (i = 0; i < n && strcmp(spec[i].name, k) != 0; i++)
                        ;
                if (i == n) {
                        snprintf(buf, cap, "unknown argument \"%.100s\"", k);
                        return buf;
                }
        }
        return NULL;
}

/* What errno means for a workspace path, for the model. */
static void reply_path_error(struct server *s, struct request *req, const char *path, int err) {
        const char *why = NULL;

        switch (err) {
        case EINVAL:
                workspace_check_path(path, true, &why);
                reply_tool_error(s, req, "%s: %s", path, why ? why : "not a valid workspace path");
                return;
        case ENOENT:
                reply_tool_error(s, req, "%s: no such file or directory in the workspace", path);
                return;
        case ELOOP:
                reply_tool_error(s, req, "%s: a symbolic link; links are not followed", path);
                return;
        case ENOTDIR:
                reply_tool_error(s, req, "%s: a part of the path is not a directory (or is a symbolic link)", path);
                return;
        case EISDIR:
                reply_tool_error(s, req, "%s: a directory (list_files lists it)", path);
                return;
        case EPERM:
                reply_tool_error(s, req, "%s: not a regular file", path);
                return;
        case ENOSPC:
        case EDQUOT:
                if (s->files_max_bytes > 0)
                        reply_tool_error(s, req,
                                         "%s: the workspace is full (it holds at most %lld bytes); nothing was "
                                         "written. Remove files to make room.",
                                         path, s->files_max_bytes);
                else
                        reply_tool_error(s, req, "%s: the workspace is full; nothing was written", path);
                return;
        default:
                reply_tool_error(s, req, "%s: %s", path, strerror(err));
        }
}

/* ---- images ------------------------------------------------------------------- */

static const char *image_type(const unsigned char *p, size_t n) {
        if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
                return "image/png";
        if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
                return "image/jpeg";
        if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
                return "image/gif";
        if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
                return "image/webp";
        return NULL;
}

static json_t *content_image(const unsigned char *data, size_t len, const char *mime) {
        _cleanup_free_ char *b64 = base64_encode(data, len, NULL);
        return b64 ? json_pack("{s:s, s:s, s:s}", "type", "image", "data", b64, "mimeType", mime) : NULL;
}

static bool has_image_name(const char *path) {
        const char *dot = strrchr(path, '.');
        return dot && (strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

/* Append the PNG and JPEG files among files to content, within the caps;
 * the others that look like images are named in *notes. */
static void add_run_images(struct server *s, json_t *content, json_t *files, FILE *notes) {
        size_t i, total = 0, count = 0;
        json_t *f;

        json_array_foreach(files, i, f) {
                const char *path = json_string_value(f), *mime;
                _cleanup_free_ char *data = NULL;
                size_t len, size;
                int r;

                if (!path || !has_image_name(path))
                        continue;
                if (count >= MCP_IMAGES_COUNT_MAX) {
                        fprintf(notes, "\n[image %s not included: at most %d images come back with a result]", path,
                                MCP_IMAGES_COUNT_MAX);
                        continue;
                }
                r = workspace_read(s->rs->files_fd, path, MCP_IMAGE_MAX, &data, &len, &size);
                if (r < 0) {
                        fprintf(notes, "\n[image %s could not be read: %s]", path, strerror(-r));
                        continue;
                }
                if (size > MCP_IMAGE_MAX || total + len > MCP_IMAGES_TOTAL_MAX) {
                        fprintf(notes, "\n[image %s not included: %zu bytes, over the %u MiB this server sends%s]",
                                path, size, (size > MCP_IMAGE_MAX ? MCP_IMAGE_MAX : MCP_IMAGES_TOTAL_MAX) >> 20,
                                size > MCP_IMAGE_MAX ? " per image" : " per result");
                        continue;
                }
                mime = image_type((const unsigned char *)data, len);
                if (!mime || strcmp(mime, "image/gif") == 0 || strcmp(mime, "image/webp") == 0) {
                        fprintf(notes, "\n[%s is not a complete PNG or JPEG file: not included]", path);
                        continue;
                }
                json_array_append_new(content, content_image((unsigned char *)data, len, mime));
                total += len;
                count++;
        }
}

/* ---- execute_r_code --------------------------------------------------------------- */

static bool start_execute(struct server *s, struct request *req, json_t *args) {
        static const struct arg_spec spec[] = {{"code", JSON_STRING, true}};
        char buf[256];
        const char *why = check_args(args, spec, ARRAY_SIZE(spec), buf, sizeof(buf));
        json_t *code;
        int r;

        if (why) {
                reply_arg_error(s, req, why);
                return false;
        }
        code = json_object_get(args, "code");
        if (json_string_length(code) == 0) {
                reply_arg_error(s, req, "\"code\" is empty");
                return false;
        }
        if (!s->rs) {
                reply_tool_error(s, req, "securerfs-mcp has no R session: %s", s->setup_error);
                return false;
        }
        if (s->pm && !s->pm->pid) {
                reply_tool_error(s, req,
                                 "The private securerfs exited (wait status %d): the session is gone; "
                                 "restart securerfs-mcp.",
                                 s->pm->status);
                return false;
        }
        r = rsession_run_begin(s->rs, json_string_value(code), json_string_length(code));
        switch (r) {
        case 0:
                return true;
        case -EBUSY:
                reply_tool_error(s, req,
                                 "The session is running other code (another client of session %s); try "
                                 "again when it ends.",
                                 s->rs->name);
                return false;
        case -EFBIG:
                reply_tool_error(s, req,
                                 "The code is %zu bytes, more than the mount's max_code_bytes; send less "
                                 "code per call, or write it to a file and source() it.",
                                 json_string_length(code));
                return false;
        case -ENOENT:
                reply_tool_error(s, req, "The session %s no longer exists (it was closed).", s->rs->name);
                return false;
        default:
                reply_tool_error(s, req, "The run could not start: %s", strerror(-r));
                return false;
        }
}

/* Whether v nests deeper than max arrays and objects (a scalar: 0). */
static bool deeper_than(const json_t *v, int max) {
        const char *key;
        json_t *e;
        size_t i;

        if (!json_is_array(v) && !json_is_object(v))
                return false;
        if (max <= 0)
                return true;
        if (json_is_array(v)) {
                json_array_foreach(v, i, e) {
                        if (deeper_than(e, max - 1))
                                return true;
                }
        } else {
                json_object_foreach((json_t *)v, key, e) {
                        if (deeper_than(e, max - 1))
                                return true;
                }
        }
        return false;
}

void tools_run_ended(struct server *s, struct request *req, json_t *result, const char *err) {
        _cleanup_json_ json_t *res = result;
        json_t *content, *structured = NULL, *files, *v;
        const char *status, *text;
        _cleanup_free_ char *notes = NULL;
        size_t notes_len = 0, i;
        FILE *nf;
        bool ok;

        if (req->cancelled) {
                server_reply_result(s, req, json_object()); /* dropped: the client cancelled it */
                return;
        }
        if (!res) {
                reply_tool_error(s, req, "%s", err ? err : "the run's result is missing");
                return;
        }
        status = json_string_value(json_object_get(res, "status"));
        ok = strcmp(status, "ok") == 0;
        v = json_object_get(res, ok ? "output" : "error");
        text = json_is_string(v) ? json_string_value(v) : ok ? "(no text form)" : "the run failed";
        content = json_array();
        if (!content) {
                server_reply_error(s, req, RPC_INTERNAL_ERROR, "out of memory");
                return;
        }
        json_array_append_new(content, content_text(text));
        v = json_object_get(res, "console");
        if (json_is_string(v) && json_string_length(v) > 0) {
                size_t len = json_string_length(v), cut = utf8_cut(json_string_value(v), len, MCP_CONSOLE_TEXT_MAX);
                _cleanup_free_ char *t = NULL;
                if (asprintf(&t, "Console output:\n%.*s%s", (int)cut, json_string_value(v),
                             cut < len ? "\n... (console cut here; the whole of it is in structuredContent)" : "") >= 0)
                        json_array_append_new(content, content_text(t));
        }
        files = json_object_get(res, "files");
        nf = open_memstream(&notes, &notes_len);
        if (nf && json_array_size(files) > 0) {
                fputs("Files created or changed in the workspace:", nf);
                json_array_foreach(files, i, v) {
                        if (i == 20) {
                                fprintf(nf, " ... (%zu in all)", json_array_size(files));
                                break;
                        }
                        if (json_is_string(v))
                                fprintf(nf, "%s %s", i ? "," : "", json_string_value(v));
                }
                if (json_is_true(json_object_get(res, "files_truncated")))
                        fputs(" (and more)", nf);
                if (s->rs)
                        add_run_images(s, content, files, nf);
        }
        if (nf && fclose(nf) == 0 && notes_len > 0)
                json_array_append_new(content, content_textn(notes, notes_len));
        if (s->version->features & MCP_F_STRUCTURED) {
                static const char *const keys[] = {"status",   "value",      "output", "error", "console",
                                                   "warnings", "elapsed_ms", "files",  "limit", "value_note"};
                structured = json_object();
                for (i = 0; structured && i < ARRAY_SIZE(keys); i++) {
                        v = json_object_get(res, keys[i]);
                        if (v)
                                json_object_set(structured, keys[i], v);
                }
                if (structured && !json_object_get(structured, "value"))
                        json_object_set_new(structured, "value", json_null());
                if (structured && !json_is_string(json_object_get(structured, "console")))
                        json_object_set_new(structured, "console", json_string(""));
                v = json_object_get(structured, "value");
                if (v && deeper_than(v, MCP_VALUE_DEPTH_MAX)) {
                        char note[200];
                        snprintf(note, sizeof(note),
                                 "the value nests deeper than the %d levels this server sends; its text form is in "
                                 "the content",
                                 MCP_VALUE_DEPTH_MAX);
                        json_object_set_new(structured, "value", json_null());
                        json_object_set_new(structured, "value_note", json_string(note));
                } else if (v && !json_is_null(v)) {
                        size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT);
                        if (n > MCP_VALUE_MAX) {
                                char note[200];
                                snprintf(note, sizeof(note),
                                         "the value is %zu bytes of JSON, more than the %u KiB this server "
                                         "sends; its text form is in the content",
                                         n, MCP_VALUE_MAX >> 10);
                                json_object_set_new(structured, "value", json_null());
                                json_object_set_new(structured, "value_note", json_string(note));
                        }
                }
        }
        server_reply_result(s, req, tool_result(content, !ok, structured));
}

/* ---- the workspace tools ------------------------------------------------------------ */

static void list_files(struct server *s, struct request *req, json_t *args) {
        static const struct arg_spec spec[] = {{"path", JSON_STRING, false}, {"recursive", JSON_TRUE, false}};
        char buf[256];
        const char *why = check_args(args, spec, ARRAY_SIZE(spec), buf, sizeof(buf));
        const char *path;
        json_t *entries = NULL, *e, *structured = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len = 0, i;
        bool truncated = false;
        FILE *f;
        int r;

        if (why) {
                reply_arg_error(s, req, why);
                return;
        }
        path = json_string_value(json_object_get(args, "path"));
        if (!path)
                path = "";
        r = workspace_list(s->rs->files_fd, path, json_is_true(json_object_get(args, "recursive")), LIST_MAX, &entries,
                           &truncated);
        if (r < 0) {
                reply_path_error(s, req, *path ? path : ".", -r);
                return;
        }
        f = open_memstream(&text, &len);
        if (!f) {
                json_decref(entries);
                reply_tool_error(s, req, "out of memory");
                return;
        }
        if (json_array_size(entries) == 0)
                fprintf(f, "%s is empty.", *path ? path : "The workspace");
        json_array_foreach(entries, i, e) {
                const char *type = json_string_value(json_object_get(e, "type"));
                fprintf(f, "%s%s", i ? "\n" : "", json_string_value(json_object_get(e, "path")));
                if (strcmp(type, "directory") == 0)
                        fputc('/', f);
                else if (strcmp(type, "file") == 0)
                        fprintf(f, "  (%lld bytes)", (long long)json_integer_value(json_object_get(e, "size")));
                else if (strcmp(type, "symlink") == 0)
                        fprintf(f, " -> %s",
                                json_string_value(json_object_get(e, "target"))
                                        ? json_string_value(json_object_get(e, "target"))
                                        : "(unreadable link)");
                else
                        fputs("  (not a regular file)", f);
        }
        if (truncated)
                fprintf(f, "\n... (only the first %d entries)", LIST_MAX);
        fclose(f);
        if (s->version->features & MCP_F_STRUCTURED)
                structured = json_pack("{s:O, s:b}", "entries", entries, "truncated", truncated);
        json_decref(entries);
        server_reply_result(s, req, tool_result(json_pack("[o]", content_textn(text, len)), false, structured));
}

static void read_file(struct server *s, struct request *req, json_t *args) {
        static const struct arg_spec spec[] = {{"path", JSON_STRING, true}};
        char buf[256];
        const char *why = check_args(args, spec, ARRAY_SIZE(spec), buf, sizeof(buf));
        _cleanup_free_ char *data = NULL;
        const char *path, *mime;
        size_t len, size, bad;
        int r;

        if (why) {
                reply_arg_error(s, req, why);
                return;
        }
        path = json_string_value(json_object_get(args, "path"));
        r = workspace_read(s->rs->files_fd, path, MAX(MCP_IMAGE_MAX, MCP_READ_TEXT_MAX), &data, &len, &size);
        if (r < 0) {
                reply_path_error(s, req, path, -r);
                return;
        }
        mime = image_type((unsigned char *)data, len);
        if (mime) {
                if (size > MCP_IMAGE_MAX) {
                        reply_tool_error(s, req, "%s: an image of %zu bytes, more than the %u MiB this server sends",
                                         path, size, MCP_IMAGE_MAX >> 20);
                        return;
                }
                server_reply_result(
                        s, req,
                        tool_result(json_pack("[o]", content_image((unsigned char *)data, len, mime)), false, NULL));
                return;
        }
        len = utf8_cut(data, len, MCP_READ_TEXT_MAX);
        /* A cut may end in the middle of a character only at the very end. */
        if (!utf8_valid(data, len, &bad)) {
                reply_tool_error(s, req,
                                 "%s: a binary file (%zu bytes), not UTF-8 text; process it with R code "
                                 "(execute_r_code) instead",
                                 path, size);
                return;
        }
        if (len < size) {
                char note[160];
                snprintf(note, sizeof(note), "[%s is %zu bytes: only its first %zu are shown]", path, size, len);
                server_reply_result(
                        s, req,
                        tool_result(json_pack("[o, o]", content_textn(data, len), content_text(note)), false, NULL));
                return;
        }
        server_reply_result(s, req, tool_result(json_pack("[o]", content_textn(data, len)), false, NULL));
}

static void write_file(struct server *s, struct request *req, json_t *args) {
        static const struct arg_spec spec[] = {
                {"path", JSON_STRING, true}, {"content", JSON_STRING, true}, {"encoding", JSON_STRING, false}};
        char buf[256];
        const char *why = check_args(args, spec, ARRAY_SIZE(spec), buf, sizeof(buf));
        const char *path, *encoding, *content;
        _cleanup_free_ unsigned char *bytes = NULL;
        size_t len;
        int r;

        if (why) {
                reply_arg_error(s, req, why);
                return;
        }
        path = json_string_value(json_object_get(args, "path"));
        content = json_string_value(json_object_get(args, "content"));
        len = json_string_length(json_object_get(args, "content"));
        encoding = json_string_value(json_object_get(args, "encoding"));
        if (encoding && strcmp(encoding, "utf-8") != 0 && strcmp(encoding, "base64") != 0) {
                reply_arg_error(s, req, "\"encoding\" must be \"utf-8\" or \"base64\"");
                return;
        }
        if (workspace_check_path(path, false, &why) < 0) {
                reply_tool_error(s, req, "%s: %s", path, why);
                return;
        }
        if (encoding && strcmp(encoding, "base64") == 0) {
                size_t n;
                if (base64_decode(content, len, &bytes, &n) < 0) {
                        reply_arg_error(s, req, "\"content\" is not valid base64");
                        return;
                }
                content = (const char *)bytes;
                len = n;
        }
        r = workspace_write(s->rs->files_fd, path, content, len);
        if (r < 0) {
                reply_path_error(s, req, path, -r);
                return;
        }
        {
                char msg[WORKSPACE_PATH_MAX + 128];
                snprintf(msg, sizeof(msg), "Wrote %zu bytes to %s in the workspace.", len, path);
                server_reply_result(s, req, tool_result(json_pack("[o]", content_text(msg)), false, NULL));
        }
}

static void restart_session(struct server *s, struct request *req, json_t *args) {
        char buf[256];
        const char *why = check_args(args, NULL, 0, buf, sizeof(buf));
        int r;

        if (why) {
                reply_arg_error(s, req, why);
                return;
        }
        r = rsession_restart(s->rs);
        if (r < 0) {
                reply_tool_error(s, req, "The session could not be restarted: %s", strerror(-r));
                return;
        }
        server_reply_result(s, req,
                            tool_result(json_pack("[o]", content_text("The R session was restarted: its variables and "
                                                                      "loaded packages are gone; the workspace's "
                                                                      "files are kept.")),
                                        false, NULL));
}

bool tools_call(struct server *s, struct request *req) {
        const char *name = json_string_value(json_object_get(req->params, "name"));
        _cleanup_json_ json_t *empty = json_object();
        json_t *args = json_object_get(req->params, "arguments");

        if (!args)
                args = empty;
        if (strcmp(name, "execute_r_code") == 0)
                return start_execute(s, req, args);
        if (!s->rs) {
                reply_tool_error(s, req, "securerfs-mcp has no R session: %s", s->setup_error);
                return false;
        }
        if (strcmp(name, "list_files") == 0)
                list_files(s, req, args);
        else if (strcmp(name, "read_file") == 0)
                read_file(s, req, args);
        else if (strcmp(name, "write_file") == 0)
                write_file(s, req, args);
        else
                restart_session(s, req, args);
        return false;
}
