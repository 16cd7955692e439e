# The client's audit log: JSON lines, mode 0600, never through a symlink.

new_audit_logger <- function(path, session_id, max_code_length = 10000L) {
  if (!is.character(path) || length(path) != 1L || is.na(path) ||
      !nzchar(path)) {
    stop("`audit_log` must be a non-empty file path.", call. = FALSE)
  }
  dir <- normalizePath(dirname(path), mustWork = FALSE)
  if (grepl("^/dev(/|$)", dir) || grepl("^/proc(/|$)", dir)) {
    stop("`audit_log` must not point to a device file.", call. = FALSE)
  }
  if (is_symlink(path)) {
    stop("`audit_log` must not be a symlink.", call. = FALSE)
  }
  dir.create(dir, recursive = TRUE, showWarnings = FALSE)
  path <- file.path(dir, basename(path))
  if (!file.exists(path)) {
    old <- Sys.umask("077")
    file.create(path)
    Sys.umask(old)
    Sys.chmod(path, "0600", use_umask = FALSE)
  }
  log <- function(event, ...) {
    entry <- list(
      timestamp = format(Sys.time(), "%Y-%m-%dT%H:%M:%OS3Z", tz = "UTC"),
      event = event,
      session_id = session_id
    )
    extra <- list(...)
    extra <- extra[!vapply(extra, is.null, logical(1))]
    if (is.character(extra$code) && nchar(extra$code) > max_code_length) {
      extra$code <- paste0(substr(extra$code, 1L, max_code_length),
                           "... [truncated]")
    }
    line <- jsonlite::toJSON(c(entry, extra), auto_unbox = TRUE,
                             null = "null", na = "null", digits = NA)
    if (is_symlink(path)) return(invisible())
    cat(line, "\n", sep = "", file = path, append = TRUE)
    invisible()
  }
  list(log = log, path = path)
}

is_symlink <- function(path) {
  lnk <- Sys.readlink(path)
  !is.na(lnk) && nzchar(lnk)
}
