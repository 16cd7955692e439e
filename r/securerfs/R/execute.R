# One-call helpers: execute_r(), with_secure_session(), default_limits(),
# validate_code().

#' Run code once in a new session
#'
#' Creates a [SecureSession], runs `code`, closes the session and returns the
#' value.
#'
#' @param code R code, a string.
#' @param tools A list of [securer_tool()] objects.
#' @param timeout Seconds (default 30); `NULL`: none.
#' @param sandbox Logical: run in the jail.
#' @param limits Resource limits (see [SecureSession]).
#' @param verbose Logical: diagnostic messages.
#' @param validate Logical: check the syntax in R first.
#' @param sandbox_strict Logical: an error if the mount has no sandbox.
#' @param audit_log Path of a JSON-lines audit log, or `NULL`.
#' @param ... More arguments for `SecureSession$new()` (`mount`,
#'   `sanitize_errors`, `pre_execute_hook`, ...).
#' @return The value of the code's last expression, with the attribute
#'   `"output"` (see [SecureSession]); its errors are those of
#'   `SecureSession$execute()`.
#' @examples
#' \dontrun{
#' execute_r("sum(1:10)")
#' }
#' @export
execute_r <- function(code, tools = list(), timeout = 30, sandbox = TRUE,
                      limits = NULL, verbose = FALSE, validate = TRUE,
                      sandbox_strict = FALSE, audit_log = NULL, ...) {
  session <- SecureSession$new(tools = tools, sandbox = sandbox,
                               limits = limits, verbose = verbose,
                               sandbox_strict = sandbox_strict,
                               audit_log = audit_log, ...)
  on.exit(session$close())
  session$execute(code, timeout = timeout, validate = validate)
}

#' Use a session for the duration of a function
#'
#' Creates a [SecureSession], calls `fn(session)` and closes the session when
#' `fn` returns or fails.
#'
#' @param fn A function of one argument, the session.
#' @param tools A list of [securer_tool()] objects.
#' @param sandbox Logical: run in the jail.
#' @param ... More arguments for `SecureSession$new()`.
#' @return What `fn` returns.
#' @examples
#' \dontrun{
#' with_secure_session(function(s) {
#'   s$execute("x <- 2")
#'   s$execute("x * 21")
#' })
#' }
#' @export
with_secure_session <- function(fn, tools = list(), sandbox = TRUE, ...) {
  if (!is.function(fn)) stop("`fn` must be a function.", call. = FALSE)
  session <- SecureSession$new(tools = tools, sandbox = sandbox, ...)
  on.exit(session$close(), add = TRUE)
  fn(session)
}

#' Default resource limits
#'
#' The limits a sandboxed session gets when `limits = NULL`: 60 CPU seconds
#' per run, 512 MiB of address space, 50 MiB files, 50 processes, 256 open
#' files (the stack keeps the mount's default, 8 MiB).
#'
#' @return A named list: `cpu`, `memory`, `fsize`, `nproc`, `nofile`.
#' @examples
#' default_limits()
#' @export
default_limits <- function() {
  list(cpu = 60, memory = 512 * 1024 * 1024, fsize = 50 * 1024 * 1024,
       nproc = 50, nofile = 256)
}

#' Check R code before running it
#'
#' Parses `code` (nothing is evaluated) and looks for calls that the sandbox
#' restricts (`system()`, `.Call()`, `download.file()`, ...). The warnings are
#' advisory: the sandbox, not this check, enforces the rules.
#'
#' @param code A single string of R code.
#' @return A list: `valid` (logical), `error` (the parse error message, or
#'   `NULL`) and `warnings` (a character vector).
#' @examples
#' validate_code("1 + 1")
#' validate_code("x <- ")
#' validate_code("system('ls')")$warnings
#' @export
validate_code <- function(code) {
  if (!is.character(code) || length(code) != 1L || is.na(code)) {
    stop("`code` must be a single character string", call. = FALSE)
  }
  parsed <- tryCatch(parse(text = code, keep.source = FALSE),
                     error = function(e) e)
  if (inherits(parsed, "error")) {
    return(list(valid = FALSE, error = conditionMessage(parsed),
                warnings = character()))
  }
  risky <- c("system", "system2", "shell", ".Internal", "Sys.setenv",
             ".Call", ".C", ".Fortran", ".External", "dyn.load", "pipe",
             "processx::run", "callr::r", "socketConnection", "url",
             "download.file", "do.call")
  warnings <- character()
  for (p in risky) {
    esc <- gsub(".", "\\.", p, fixed = TRUE)
    re <- if (grepl("::", p, fixed = TRUE)) paste0(esc, "\\s*\\(") else
      paste0("(^|[^A-Za-z0-9._])", esc, "\\s*\\(")
    if (grepl(re, code, perl = TRUE)) {
      warnings <- c(warnings, paste0("Code contains call to `", p,
                                     "()` which may be restricted by the sandbox"))
    }
  }
  list(valid = TRUE, error = NULL, warnings = warnings)
}
