# SecureSession: one session directory of a securerfs mount.

limit_names <- c("cpu", "memory", "fsize", "nproc", "nofile", "stack")

validate_limits <- function(limits) {
  if (is.null(limits)) return(invisible(NULL))
  if (!is.list(limits) && !is.numeric(limits)) {
    stop("`limits` must be a named list.", call. = FALSE)
  }
  limits <- as.list(limits)
  if (length(limits) && (is.null(names(limits)) ||
                         any(!nzchar(names(limits))))) {
    stop("`limits` must be a named list.", call. = FALSE)
  }
  unknown <- setdiff(names(limits), limit_names)
  if (length(unknown)) {
    stop("Unknown limit name(s): ", paste(unknown, collapse = ", "),
         ". Valid names: ", paste(limit_names, collapse = ", "),
         call. = FALSE)
  }
  for (nm in names(limits)) {
    v <- limits[[nm]]
    if (is.null(v) || (length(v) == 1L && (is.na(v) || identical(v, Inf)))) {
      next
    }
    if (!is.numeric(v) || length(v) != 1L || v <= 0) {
      stop("Limit '", nm, "' must be a single positive number, got: ",
           paste(deparse(v), collapse = ""), call. = FALSE)
    }
  }
  invisible(limits)
}

# The JSON for sessions/N/limits: NULL leaves the mount's defaults; list()
# lifts every limit; NULL, NA or Inf for one key lifts that one.
limits_json <- function(limits, sandbox) {
  if (is.null(limits)) {
    if (isTRUE(sandbox)) return(NULL)
    limits <- list()
  }
  limits <- as.list(limits)
  if (length(limits) == 0L) {
    limits <- stats::setNames(rep(list(NULL), length(limit_names)),
                              limit_names)
  }
  vals <- lapply(limits, function(v) {
    if (is.null(v) || is.na(v) || is.infinite(v)) NULL else ceiling(v)
  })
  as.character(jsonlite::toJSON(vals, auto_unbox = TRUE, null = "null",
                                digits = NA))
}

strip_error_prefix <- function(msg) {
  sub("^Error: ", "", msg %||% "")
}

#' A sandboxed, persistent R session
#'
#' @description
#' An R6 class with the API of securer's \code{SecureSession}: each object is
#' one session directory (\code{sessions/N}) of a securerfs mount, in which
#' code runs in a jailed R worker that keeps its variables between
#' \code{$execute()} calls.
#'
#' @details
#' \strong{The mount.} \code{mount}, then \code{getOption("securerfs.mount")},
#' then the environment variable \code{SECURERFS_MOUNT}; otherwise a private
#' mount started by the package (see \code{\link{securerfs_mount}()}).
#'
#' \strong{Values.} \code{$execute()} returns the value of the last
#' top-level expression (visible or not) rebuilt from the session's
#' \code{value.json}: atomic vectors, \code{NULL}, \code{NA}, (named) lists
#' and data frames round-trip through JSON with jsonlite's conventions, so
#' attributes such as the names of an atomic vector, factor levels and
#' classes (Date, POSIXct become strings) are not kept, and whole numbers
#' come back as integers. A value with no JSON form (a function, an
#' environment) comes back as its printed text, a character string with an
#' attribute \code{"value_note"} saying why. What the code printed (the
#' session's \code{console}: \code{cat}, \code{print}, messages, warnings) is
#' in the attribute \code{"output"}, one element a line (not set on
#' \code{NULL}).
#'
#' \strong{Errors} are R errors of class \code{"securerfs_error"} and one
#' of: \code{"securerfs_syntax_error"} (the code does not parse; with
#' \code{validate = TRUE} checked in R before anything is sent),
#' \code{"securerfs_runtime_error"} (an R error in the session, also from a
#' tool: unknown tool, bad argument type, an error in the tool's function),
#' \code{"securerfs_timeout"} ("Execution timed out after N seconds"; the
#' run was interrupted and, unlike securer, the session's state is kept),
#' \code{"securerfs_crash"} (the worker crashed or was killed by a limit; a
#' fresh one replaced it and the state was lost),
#' \code{"securerfs_dead_session"} ("Session is not running": closed, or its
#' directory is gone), \code{"securerfs_blocked"} (\code{max_executions},
#' \code{pre_execute_hook}, \code{max_code_length}, \code{max_tool_calls}),
#' \code{"securerfs_mount_error"} (no mount and no program to start one),
#' \code{"securerfs_io_error"} (the mount refused a write: EBUSY, EFBIG,
#' EINVAL). The condition carries the run's \code{result.json} as
#' \code{$result} when there was a run.
#'
#' \strong{Limits.} \code{limits} is written to the session's
#' \code{limits} file. \code{NULL} with \code{sandbox = TRUE} applies
#' \code{\link{default_limits}()}; \code{NULL} with \code{sandbox = FALSE}
#' and \code{list()} lift every limit; a limit that is not named keeps the
#' mount's default (see its \code{config}; securer leaves it unlimited);
#' \code{Inf} or \code{NA} lifts one limit. \code{cpu} is per run.
#'
#' \strong{Sandbox.} Sessions of a securerfs mount are always jailed unless
#' the mount runs with \code{-o sandbox=none}. \code{sandbox = FALSE} makes
#' the package start (and use) its own mount with \code{-o sandbox=none};
#' a mount given by the caller is used as it is, with a warning if its
#' sandbox does not match (an error when \code{sandbox = TRUE},
#' \code{sandbox_strict = TRUE} and the mount has no sandbox).
#'
#' \strong{Audit log.} \code{audit_log} is the client's own JSON-lines log
#' (events \code{session_start}, \code{execute_start},
#' \code{execute_complete}, \code{execute_error}, \code{execute_timeout},
#' \code{execute_blocked}, \code{session_restart}, \code{session_close}, and
#' \code{tool_call} written by the tool process). The daemon's own audit log
#' is a daemon option (\code{-o audit_log=PATH}); each session's events are
#' also in its \code{log} file.
#'
#' \strong{Tool calls.} \code{max_tool_calls} is enforced twice: the
#' package's tool process refuses calls beyond it (the code sees an R error),
#' and \code{$execute()} raises "Maximum tool calls (N) exceeded" when the
#' run's \code{tool_calls} count in \code{result.json} is over it (this also
#' counts tools defined by others on the mount). The mount has its own
#' per-run cap (1000 by default).
#'
#' @examples
#' \dontrun{
#' session <- SecureSession$new()
#' session$execute("x <- 1:10; mean(x)")
#' session$execute("sum(x)")             # state persists
#' session$close()
#'
#' tools <- list(securer_tool("add", "Add numbers",
#'   fn = function(a, b) a + b, args = list(a = "numeric", b = "numeric")))
#' session <- SecureSession$new(tools = tools)
#' session$execute("add(2, 3)")
#' session$close()
#' }
#' @export
SecureSession <- R6::R6Class("SecureSession",
  cloneable = FALSE,
  public = list(
    #' @description Create a session.
    #' @param tools A list of \code{\link{securer_tool}()} objects.
    #' @param sandbox Logical: run in the jail (default \code{TRUE}).
    #' @param limits Named list of resource limits (\code{cpu} seconds per
    #'   run, \code{memory}, \code{fsize}, \code{stack} bytes, \code{nproc},
    #'   \code{nofile} counts); see Details.
    #' @param verbose Logical: report sessions, runs and timings with
    #'   \code{message()}.
    #' @param sandbox_strict Logical: an error instead of a warning when the
    #'   mount found runs without a sandbox.
    #' @param audit_log Path of a JSON-lines audit log written by the client,
    #'   or \code{NULL}.
    #' @param max_executions Largest number of \code{$execute()} calls, or
    #'   \code{NULL} for no limit.
    #' @param pre_execute_hook A function of \code{code} called before each
    #'   run; returning \code{FALSE} blocks the run with an error.
    #' @param sanitize_errors Logical: strip paths, hosts and process ids
    #'   from error messages.
    #' @param mount Directory of a securerfs mount, or \code{NULL} (see
    #'   \code{\link{securerfs_mount}()}).
    initialize = function(tools = list(), sandbox = TRUE, limits = NULL,
                          verbose = FALSE, sandbox_strict = FALSE,
                          audit_log = NULL, max_executions = NULL,
                          pre_execute_hook = NULL, sanitize_errors = FALSE,
                          mount = NULL) {
      private$tool_list <- validate_tools(tools)
      if (!is.null(max_executions)) {
        if (!is.numeric(max_executions) || length(max_executions) != 1L ||
            is.na(max_executions) || max_executions <= 0) {
          stop("`max_executions` must be a single positive number.",
               call. = FALSE)
        }
        private$max_executions <- as.integer(max_executions)
      }
      if (!is.null(pre_execute_hook) && !is.function(pre_execute_hook)) {
        stop("`pre_execute_hook` must be a function, not ",
             class(pre_execute_hook)[1], ".", call. = FALSE)
      }
      private$hook <- pre_execute_hook
      private$sanitize <- isTRUE(sanitize_errors)
      private$sandbox <- isTRUE(sandbox)
      private$verbose <- isTRUE(verbose)
      if (private$sandbox && is.null(limits)) limits <- default_limits()
      validate_limits(limits)
      private$limits <- limits
      private$mount <- securerfs_mount(sandbox = private$sandbox,
                                       sandbox_strict = sandbox_strict,
                                       mount = mount)
      private$id <- paste0("s", Sys.getpid(), "-",
                           basename(tempfile("")))
      if (!is.null(audit_log)) {
        private$audit <- new_audit_logger(audit_log, private$id)
      }
      private$start()
    },

    #' @description Run code in the session.
    #' @param code R code, a string (a character vector is joined with
    #'   newlines).
    #' @param timeout Seconds for this run (default 30); \code{NULL} or 0:
    #'   none. The run is interrupted at the deadline and the session's
    #'   state is kept.
    #' @param validate Logical: parse the code in R first and raise a syntax
    #'   error without running anything.
    #' @param output_handler \code{NULL} or a function called with each
    #'   line the code prints, while the run goes on, as the session's
    #'   \code{console} file shows it: terminal control characters escaped
    #'   (\code{"\\x1b"}); the \code{"output"} attribute has the exact text.
    #' @param max_tool_calls Largest number of tool calls in this run, or
    #'   \code{NULL} (see Details).
    #' @param max_code_length Largest \code{nchar(code)}.
    #' @param max_output_lines Largest number of lines kept in the
    #'   \code{"output"} attribute, or \code{NULL}.
    #' @return The value, with the attribute \code{"output"}.
    execute = function(code, timeout = 30, validate = TRUE,
                       output_handler = NULL, max_tool_calls = NULL,
                       max_code_length = 100000L, max_output_lines = NULL) {
      if (private$sanitize) {
        tryCatch(
          private$execute_checked(code, timeout, validate, output_handler,
                                  max_tool_calls, max_code_length,
                                  max_output_lines, text = FALSE),
          error = function(e) {
            e$message <- sanitize_error_message(conditionMessage(e))
            e$call <- NULL
            stop(e)
          })
      } else {
        private$execute_checked(code, timeout, validate, output_handler,
                                max_tool_calls, max_code_length,
                                max_output_lines, text = FALSE)
      }
    },

    #' @description Close the session (its directory is removed, its worker
    #'   and tool process end). Safe to call twice.
    #' @return Invisible self.
    close = function() {
      if (!private$closed) {
        private$closed <- TRUE
        private$audit_log("session_close")
        private$log("Session closed")
        if (!is.null(private$dir)) {
          suppressWarnings(try(file.remove(private$dir), silent = TRUE))
        }
        if (!is.null(private$gc_env)) private$gc_env$dir <- NULL
        if (!is.null(private$state)) {
          unlink(c(private$state$state_file, private$state$budget_file))
        }
      }
      invisible(self)
    },

    #' @description Whether the session can run code.
    #' @return Logical.
    is_alive = function() {
      if (private$closed || is.null(private$dir)) return(FALSE)
      st <- tryCatch(read_line(file.path(private$dir, "status")),
                     error = function(e) "dead")
      !identical(st, "dead")
    },

    #' @description Replace the session's worker by a fresh one: variables
    #'   are cleared, tools stay.
    #' @return Invisible self.
    restart = function() {
      if (private$executing) {
        stop("Cannot restart while an execution is in progress.",
             call. = FALSE)
      }
      private$check_alive()
      private$log("Restarting session")
      private$audit_log("session_restart")
      write_file(file.path(private$dir, "ctl"), "restart\n")
      private$wait_ready()
      invisible(self)
    },

    #' @description The session's tools.
    #' @return A named list: for each tool, \code{name} and \code{args}.
    tools = function() {
      if (length(private$tool_list) == 0L) return(list())
      lapply(private$tool_list, function(t) list(name = t$name,
                                                 args = t$args))
    },

    #' @description The session's directory in the mount
    #'   (\code{sessions/N}), for its \code{files}, \code{log} and other
    #'   files.
    #' @return A string.
    path = function() private$dir,

    #' @description Copy a file of the host into the session's workspace
    #'   (\code{/work}, the code's working directory and \code{HOME}), where
    #'   the code reads it by name: \code{read.csv("data.csv")}. Files stay
    #'   across runs, restarts and crashes, and go when the session closes.
    #' @param path A file on the host.
    #' @param name Its name in the workspace (default: the file's own name);
    #'   may contain \code{/} (directories are made as needed), no \code{..}.
    #' @return The name, invisibly.
    upload = function(path, name = basename(path)) {
      private$check_alive()
      if (!is.character(path) || length(path) != 1L || !file.exists(path) ||
          dir.exists(path)) {
        stop("`path` must name an existing file.", call. = FALSE)
      }
      target <- private$workspace_path(name)
      dir.create(dirname(target), recursive = TRUE, showWarnings = FALSE)
      ok <- suppressWarnings(file.copy(path, target, overwrite = TRUE))
      if (!isTRUE(ok)) {
        stop(sprintf("Could not copy %s into the workspace as %s (is it full? the mount's files_max_bytes caps it).",
                     path, name), call. = FALSE)
      }
      private$log(sprintf("Uploaded %s as %s", path, name))
      invisible(name)
    },

    #' @description Copy a file of the session's workspace to the host.
    #'   Only regular files are copied: a symbolic link the code made is
    #'   refused, whatever it points to. The file's size is checked before
    #'   any of it is read, and the copy is a new file with mode 0644 (0755
    #'   when the file is executable by its owner), less the umask: never
    #'   set-id.
    #' @param name The file's name in the workspace (as \code{$files()}
    #'   lists it).
    #' @param dest Where to write it (default: its base name in the current
    #'   directory). An existing file (or link) there is replaced.
    #' @param max_bytes The largest file copied (default: the option
    #'   \code{securerfs.download_max_bytes}, else 256 MiB); a larger one is
    #'   an error and nothing is written.
    #' @return \code{dest}, invisibly.
    download = function(name, dest = basename(name),
                        max_bytes = download_max_bytes_default()) {
      check_max_bytes(max_bytes)
      if (private$closed || is.null(private$dir)) {
        stop("The session is closed.", call. = FALSE)
      }
      src <- private$workspace_path(name)
      if (!basename(src) %in% list.files(dirname(src), all.files = TRUE,
                                         no.. = TRUE)) {
        stop(sprintf("No file %s in the session's workspace.", name),
             call. = FALSE)
      }
      # "" for a file; the text of a link; NA for a link the mount will not
      # resolve (one that could lead out of the workspace).
      lnk <- Sys.readlink(src)
      if (is.na(lnk) || nzchar(lnk)) {
        stop(sprintf("%s is a symbolic link in the workspace; not copied.", name),
             call. = FALSE)
      }
      copy_out(src, dest, max_bytes, what = name)
      invisible(dest)
    },

    #' @description The files in the session's workspace, found without
    #'   following any link the code made (so links to \code{"."} cannot
    #'   make the walk loop), at most 64 directories deep and 100,000
    #'   entries.
    #' @return A data frame with one row per regular file: \code{name}
    #'   (relative to \code{/work}, as the mount shows it: a name with
    #'   control characters is escaped), \code{size} (bytes) and
    #'   \code{mtime}.
    files = function() {
      if (private$closed || is.null(private$dir)) {
        stop("The session is closed.", call. = FALSE)
      }
      workspace_walk(file.path(private$dir, "files"))
    },

    #' @description One line describing the session.
    #' @param ... Ignored.
    #' @return A string.
    format = function(...) {
      status <- if (self$is_alive()) "running" else "stopped"
      sprintf("<SecureSession> [%s] session=%s sandbox=%s tools=%d mount=%s",
              status, private$name %||% "NA",
              if (private$sandbox) "enabled" else "disabled",
              length(private$tool_list), private$mount %||% "NA")
    },

    #' @description Print the session.
    #' @param ... Ignored.
    #' @return Invisible self.
    print = function(...) {
      status <- if (self$is_alive()) "running" else "stopped"
      cat("<SecureSession>\n",
          "  Status: ", status, "\n",
          "  Session: ", private$name %||% "NA", "\n",
          "  Tool count: ", length(private$tool_list), "\n",
          "  Sandbox: ", if (private$sandbox) "enabled" else "disabled", "\n",
          "  Mount: ", private$mount %||% "NA", "\n", sep = "")
      invisible(self)
    }
  ),

  private = list(
    # The mount path of name in the workspace, refusing names that are not
    # plainly relative (absolute, empty, "..", NUL-free by R's own rules).
    workspace_path = function(name) {
      if (!is.character(name) || length(name) != 1L || is.na(name) ||
          !nzchar(name) || startsWith(name, "/") ||
          any(strsplit(name, "/", fixed = TRUE)[[1]] %in% c("..", "."))) {
        stop("`name` must be a relative path inside the workspace (no '..').",
             call. = FALSE)
      }
      file.path(private$dir, "files", name)
    },
    mount = NULL,
    dir = NULL,
    name = NULL,
    id = NULL,
    closed = FALSE,
    tool_list = list(),
    state = NULL,
    limits = NULL,
    sandbox = TRUE,
    verbose = FALSE,
    audit = NULL,
    max_executions = NULL,
    execution_count = 0L,
    hook = NULL,
    sanitize = FALSE,
    executing = FALSE,
    timeout_written = NULL,
    gc_env = NULL,

    log = function(...) {
      if (private$verbose) message("[securerfs] ", ...)
    },

    audit_log = function(event, ...) {
      if (!is.null(private$audit)) private$audit$log(event, ...)
    },

    start = function() {
      start <- Sys.time()
      name <- tryCatch(read_line(file.path(private$mount, "clone")),
                       error = function(e) {
                         abort(paste0("could not create a session in ",
                                      private$mount, " (",
                                      conditionMessage(e), ")"),
                               class = "securerfs_mount_error")
                       })
      private$name <- name
      private$dir <- file.path(private$mount, "sessions", name)
      # Close the session when this object is garbage collected or R exits.
      gc_env <- new.env(parent = emptyenv())
      gc_env$dir <- private$dir
      reg.finalizer(gc_env, function(e) {
        if (!is.null(e$dir)) suppressWarnings(try(file.remove(e$dir),
                                                  silent = TRUE))
      }, onexit = TRUE)
      private$gc_env <- gc_env
      lj <- limits_json(private$limits, private$sandbox)
      if (!is.null(lj)) write_file(file.path(private$dir, "limits"), lj)
      if (length(private$tool_list)) private$install_tools()
      private$log(sprintf(
        "Session %s started (sandbox=%s, mount=%s, tools=%d, %s)", name,
        tolower(as.character(private$sandbox)), private$mount,
        length(private$tool_list), elapsed_str(start)))
      private$audit_log("session_start", session = name,
                        sandbox = private$sandbox, mount = private$mount)
    },

    install_tools = function() {
      tdir <- file.path(private$dir, "tools")
      if (!dir.exists(tdir)) {
        self$close()
        abort(paste0("the securerfs mount at ", private$mount,
                     " has no sessions/N/tools/ directory: it is too old ",
                     "for tools (see docs/tools.md)"),
              class = "securerfs_mount_error")
      }
      audit_path <- if (!is.null(private$audit)) private$audit$path
      private$state <- write_tool_state(private$tool_list, private$id,
                                        audit_path)
      for (t in private$tool_list) {
        write_file(file.path(tdir, paste0(t$name, ".json")),
                   tool_definition(t, private$state$state_file))
      }
    },

    wait_ready = function(limit = 15) {
      deadline <- Sys.time() + limit
      repeat {
        st <- tryCatch(read_line(file.path(private$dir, "status")),
                       error = function(e) "dead")
        if (!identical(st, "starting") || Sys.time() > deadline) return(st)
        Sys.sleep(0.02)
      }
    },

    check_alive = function() {
      if (!self$is_alive()) {
        abort("Session is not running (it was closed or its worker is gone).",
              class = "securerfs_dead_session")
      }
    },

    blocked = function(msg) {
      private$audit_log("execute_blocked", reason = msg)
      abort(msg, class = "securerfs_blocked")
    },

    # Checks, then the run.  text = TRUE returns the result.json fields
    # (for the ellmer tool) instead of the R value.
    execute_checked = function(code, timeout, validate, output_handler,
                               max_tool_calls, max_code_length,
                               max_output_lines, text) {
      private$check_alive()
      if (private$executing) {
        abort(paste("SecureSession does not support concurrent execute()",
                    "calls; wait for the current execution to complete."),
              class = "securerfs_blocked")
      }
      if (!is.character(code) || anyNA(code)) {
        stop("`code` must be a character string.", call. = FALSE)
      }
      code <- paste(code, collapse = "\n")
      if (!is.null(private$max_executions) &&
          private$execution_count >= private$max_executions) {
        private$blocked(sprintf(
          "Maximum executions (%d) reached for this session.",
          private$max_executions))
      }
      if (!is.null(private$hook)) {
        ok <- tryCatch(private$hook(code), error = function(e) {
          private$blocked(paste0("pre_execute_hook error: ",
                                 conditionMessage(e)))
        })
        if (identical(ok, FALSE)) {
          private$blocked("Execution blocked by pre_execute_hook.")
        }
      }
      if (!is.null(max_code_length) && nchar(code) > max_code_length) {
        private$blocked(sprintf("Code too long (%d chars, max %d).",
                                nchar(code), as.integer(max_code_length)))
      }
      if (!is.null(output_handler) && !is.function(output_handler)) {
        stop("`output_handler` must be a function or NULL.", call. = FALSE)
      }
      if (!is.null(max_tool_calls) &&
          (!is.numeric(max_tool_calls) || length(max_tool_calls) != 1L ||
           is.na(max_tool_calls) || max_tool_calls < 0)) {
        stop("`max_tool_calls` must be NULL or a non-negative number.",
             call. = FALSE)
      }
      if (isTRUE(validate)) {
        check <- validate_code(code)
        if (!check$valid) {
          private$audit_log("execute_error", error = check$error,
                            syntax = TRUE)
          abort(paste0("Code has a syntax error and was not executed:\n",
                       check$error),
                class = "securerfs_syntax_error")
        }
      }
      private$executing <- TRUE
      on.exit(private$executing <- FALSE)
      private$execution_count <- private$execution_count + 1L
      private$run(code, timeout, output_handler, max_tool_calls,
                  max_output_lines, text)
    },

    set_timeout = function(timeout) {
      t <- if (is.null(timeout)) 0 else timeout
      if (!is.numeric(t) || length(t) != 1L || is.na(t) || t < 0) {
        stop("`timeout` must be NULL or a non-negative number of seconds.",
             call. = FALSE)
      }
      if (is.infinite(t)) t <- 0
      if (!identical(t, private$timeout_written)) {
        write_file(file.path(private$dir, "timeout"),
                   paste0(format(t, scientific = FALSE), "\n"))
        private$timeout_written <- t
      }
      t
    },

    run = function(code, timeout, output_handler, max_tool_calls,
                   max_output_lines, text) {
      start <- Sys.time()
      t <- private$set_timeout(timeout)
      if (!is.null(private$state)) {
        writeLines(sprintf("%d %d", private$execution_count,
                           if (is.null(max_tool_calls)) -1L else
                             as.integer(max_tool_calls)),
                   private$state$budget_file)
      }
      private$audit_log("execute_start", code = code)
      private$log(sprintf("Executing code (%d chars)", nchar(code)))
      dir <- private$dir
      tryCatch(write_file(file.path(dir, "input"), code),
               securerfs_io_error = function(e) {
                 if (!self$is_alive()) private$check_alive()
                 st <- tryCatch(read_line(file.path(dir, "status")),
                                error = function(e) "dead")
                 if (identical(st, "running")) {
                   abort(paste("The session is running other code",
                               "(another writer); try again when it ends."),
                         class = "securerfs_io_error")
                 }
                 if (nchar(code, type = "bytes") > 0) {
                   cfg <- mount_config(private$mount)
                   if (!is.null(cfg$max_code_bytes) &&
                       nchar(code, type = "bytes") > cfg$max_code_bytes) {
                     private$blocked(sprintf(
                       "Code too long (%d bytes, the mount's max_code_bytes is %d).",
                       nchar(code, type = "bytes"),
                       as.integer(cfg$max_code_bytes)))
                   }
                 }
                 stop(e)
               })
      emitted <- 0L
      if (is.function(output_handler)) {
        emitted <- private$stream_console(output_handler)
      }
      res_txt <- tryCatch(read_file(file.path(dir, "result.json")),
                          error = function(e) {
                            private$check_alive()
                            abort(paste("could not read the result:",
                                        conditionMessage(e)),
                                  class = "securerfs_io_error")
                          })
      res <- jsonlite::fromJSON(res_txt, simplifyVector = FALSE)
      console <- res$console %||% ""
      if (is.function(output_handler)) {
        # The rest of the console file (the handler sees the lines as the
        # file shows them, control characters escaped; the value's "output"
        # attribute has the exact text).
        rest <- tryCatch(read_from(file.path(dir, "console"), emitted),
                         error = function(e) raw(0))
        emit_lines(c(.securerfs_partial(output_handler), rest),
                   output_handler, final = TRUE)
      }
      lines <- if (nzchar(console)) {
        strsplit(console, "\n", fixed = TRUE)[[1]]
      } else {
        character()
      }
      if (!is.null(max_output_lines) &&
          length(lines) > max_output_lines) {
        lines <- lines[seq_len(max(0, max_output_lines))]
      }
      elapsed <- elapsed_str(start)
      n_calls <- as.integer(res$tool_calls %||% 0L)
      status <- res$status %||% "error"
      if (!is.null(max_tool_calls) && n_calls > max_tool_calls &&
          !status %in% c("crashed", "killed")) {
        private$audit_log("execute_error", error = "max_tool_calls",
                          tool_calls = n_calls)
        abort(sprintf("Maximum tool calls (%d) exceeded",
                      as.integer(max_tool_calls)),
              class = "securerfs_blocked", result = res)
      }
      if (identical(status, "ok")) {
        private$log(sprintf("Execution complete (%s, %s)", elapsed,
                            plural(n_calls, "tool call")))
        private$audit_log("execute_complete", elapsed = elapsed,
                          tool_calls = n_calls)
        if (text) {
          return(list(output = res$output %||% "", console = console,
                      result = res))
        }
        return(private$rebuild(res, lines))
      }
      err <- res$error %||% "unknown error"
      if (identical(status, "timeout")) {
        label <- plural(format(t, scientific = FALSE), "second")
        msg <- paste0("Execution timed out after ", label,
                      " (the run was interrupted; the session's state is kept)")
        private$log(sprintf("Execution timed out after %s", label))
        private$audit_log("execute_timeout", timeout_secs = t)
        abort(msg, class = "securerfs_timeout", result = res,
              output = lines)
      }
      private$log(sprintf("Execution error: %s (%s)", err, elapsed))
      private$audit_log("execute_error", error = err, status = status,
                        elapsed = elapsed)
      if (status %in% c("crashed", "killed")) {
        abort(err, class = "securerfs_crash", result = res, output = lines)
      }
      # The daemon says what kind of error it was (result.json's
      # error_kind), so that no message text is parsed here.
      if (identical(res$error_kind, "syntax")) {
        abort(err, class = "securerfs_syntax_error", result = res,
              output = lines)
      }
      abort(strip_error_prefix(err), class = "securerfs_runtime_error",
            result = res, output = lines)
    },

    # Poll the console file while the run goes on; returns the bytes
    # emitted (an offset in that file).
    stream_console = function(handler) {
      dir <- private$dir
      offset <- 0
      .securerfs$partial <- raw(0)
      repeat {
        st <- tryCatch(read_line(file.path(dir, "status")),
                       error = function(e) "dead")
        b <- tryCatch(read_from(file.path(dir, "console"), offset),
                      error = function(e) raw(0))
        if (length(b)) {
          offset <- offset + length(b)
          emit_lines(c(.securerfs$partial, b), handler, final = FALSE)
        }
        if (!identical(st, "running")) break
        Sys.sleep(0.05)
      }
      as.integer(offset)
    },

    rebuild = function(res, lines) {
      if (!is.null(res$value_note)) {
        val <- res$output %||% ""
        attr(val, "value_note") <- res$value_note
      } else {
        vj <- tryCatch(read_file(file.path(private$dir, "value.json")),
                       error = function(e) "")
        val <- if (nzchar(vj)) jsonlite::fromJSON(vj, simplifyVector = TRUE)
        if (is.null(val) && identical(res$output, "NA")) val <- NA
      }
      if (!is.null(val) && length(lines)) attr(val, "output") <- lines
      val
    }
  )
)

.securerfs_partial <- function(handler) {
  p <- .securerfs$partial %||% raw(0)
  .securerfs$partial <- raw(0)
  p
}

# Call handler on each complete line of bytes; keep the rest (or emit it
# too when final).
emit_lines <- function(bytes, handler, final) {
  nl <- which(bytes == as.raw(10L))
  last <- if (length(nl)) max(nl) else 0L
  complete <- if (last > 0L) bytes[seq_len(last)] else raw(0)
  rest <- if (last < length(bytes)) bytes[(last + 1L):length(bytes)] else
    raw(0)
  if (final && length(rest)) {
    complete <- c(complete, rest, as.raw(10L))
    rest <- raw(0)
  }
  .securerfs$partial <- rest
  if (length(complete)) {
    txt <- rawToChar(complete)
    Encoding(txt) <- "UTF-8"
    for (ln in strsplit(txt, "\n", fixed = TRUE)[[1]]) {
      tryCatch(handler(ln), error = function(e) NULL)
    }
  }
  invisible()
}
