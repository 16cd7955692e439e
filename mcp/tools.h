/* The MCP tools of securerfs-mcp: execute_r_code, list_files, read_file,
 * write_file, restart_session (docs/mcp.md says what each does). */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "server.h"

/* Caps on what one tool result carries, so that a reply stays well under
 * the 10 MiB a line that the official SDK's stdio client accepts. */
#define MCP_IMAGE_MAX (2u << 20)        /* one image, raw bytes */
#define MCP_IMAGES_TOTAL_MAX (4u << 20) /* all images of one result */
#define MCP_IMAGES_COUNT_MAX 8
#define MCP_VALUE_MAX (1u << 20)         /* the value in structuredContent, as JSON */
/* Its nesting: with the reply's own levels (result, structuredContent) it
 * stays under the 200 of pydantic, which Python MCP clients parse with. */
#define MCP_VALUE_DEPTH_MAX 128
#define MCP_CONSOLE_TEXT_MAX (32u << 10) /* the console in the text content */
#define MCP_READ_TEXT_MAX (1u << 20)     /* read_file, text */

/* Is name one of ours? */
bool tools_known(const char *name);

/* The result of tools/list for s's protocol revision and session. */
json_t *tools_list(struct server *s);

/* Serve a tools/call request (its name known, params checked): answer it
 * (and free it), or start a run and return true: then req is the server's
 * current request until tools_run_ended(). */
bool tools_call(struct server *s, struct request *req);

/* The run of the current request ended with result (result.json, stolen;
 * NULL with err set when it could not be read).  Answers req unless it
 * was cancelled; frees it. */
void tools_run_ended(struct server *s, struct request *req, json_t *result, const char *err);

/* One text content block. */
json_t *content_text(const char *text);

/* Cut s[0..len) to at most max bytes at a UTF-8 character boundary. */
size_t utf8_cut(const char *s, size_t len, size_t max);
