# Small helpers: conditions, file I/O on the mount, logging.

`%||%` <- function(x, y) if (is.null(x)) y else x

# A condition of class c(class, "securerfs_error", "error", "condition").
securerfs_error <- function(message, class = NULL, ..., call = NULL) {
  structure(
    class = c(class, "securerfs_error", "error", "condition"),
    list(message = message, call = call, ...)
  )
}

abort <- function(message, class = NULL, ...) {
  stop(securerfs_error(message, class = class, ...))
}

nonempty_string <- function(x) {
  if (is.null(x) || length(x) != 1L || is.na(x) || !nzchar(x)) NULL else x
}

# The whole content of a file, as one UTF-8 string.  Blocks when the mount
# makes the read wait (output, result.json, value.json during a run).
read_file <- function(path) {
  con <- suppressWarnings(file(path, open = "rb"))
  on.exit(close(con))
  chunks <- list()
  repeat {
    chunk <- readBin(con, what = "raw", n = 1048576L)
    if (length(chunk) == 0L) break
    chunks[[length(chunks) + 1L]] <- chunk
  }
  txt <- rawToChar(unlist(chunks, use.names = FALSE) %||% raw(0))
  Encoding(txt) <- "UTF-8"
  txt
}

# Bytes of a file from offset on (the console while a run is under way).
read_from <- function(path, offset) {
  con <- suppressWarnings(file(path, open = "rb"))
  on.exit(close(con))
  if (offset > 0) seek(con, where = offset, origin = "start")
  chunks <- list()
  repeat {
    chunk <- readBin(con, what = "raw", n = 1048576L)
    if (length(chunk) == 0L) break
    chunks[[length(chunks) + 1L]] <- chunk
  }
  unlist(chunks, use.names = FALSE) %||% raw(0)
}

# Write text to a file of the mount in one open/write/close: the daemon acts
# on close (input starts a run, ctl/timeout/limits/tools take effect).
write_file <- function(path, text) {
  con <- tryCatch(
    suppressWarnings(file(path, open = "wb")),
    error = function(e) {
      why <- if (file.exists(path)) "busy or refused" else "missing"
      abort(sprintf("cannot open %s for writing (%s)", path, why),
            class = "securerfs_io_error")
    }
  )
  ok <- FALSE
  on.exit(if (!ok) try(close(con), silent = TRUE))
  writeBin(charToRaw(enc2utf8(text)), con)
  res <- tryCatch({
    close(con)
    TRUE
  }, error = function(e) e, warning = function(w) w)
  ok <- TRUE
  if (!isTRUE(res)) {
    abort(sprintf("writing %s was refused: %s", path, conditionMessage(res)),
          class = "securerfs_io_error")
  }
  invisible(TRUE)
}

read_line <- function(path) {
  sub("\n+$", "", read_file(path))
}

plural <- function(n, unit) {
  if (isTRUE(n == 1)) paste(n, unit) else paste0(n, " ", unit, "s")
}

elapsed_str <- function(start) {
  sprintf("%.2fs", as.numeric(difftime(Sys.time(), start, units = "secs")))
}

#' Strip sensitive details from an error message
#'
#' Used when \code{sanitize_errors = TRUE}: absolute paths, IP addresses,
#' host names in connection errors and process ids are replaced, and the
#' message is cut at \code{max_length} characters.
#' @param msg A character string.
#' @param max_length Longest message kept.
#' @return The cleaned message.
#' @keywords internal
#' @noRd
sanitize_error_message <- function(msg, max_length = 500L) {
  if (!is.character(msg) || length(msg) == 0L || is.na(msg[1])) {
    return("Unknown error")
  }
  msg <- msg[1]
  msg <- sub("(?s)(Traceback|Call stack|Stack trace):?\\s*\\n.*", "", msg,
             perl = TRUE)
  # Absolute paths of two components or more: /home/x, /tmp/RtmpX/file, ...
  msg <- gsub("(?<![A-Za-z0-9_.])(/[A-Za-z0-9_.+@~-]+){2,}/?", "[path]", msg,
              perl = TRUE)
  msg <- gsub("[A-Za-z]:\\\\[^ '\",:)}\n]+", "[path]", msg)
  msg <- gsub("\\b\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}(:\\d+)?\\b",
              "[host]", msg, perl = TRUE)
  msg <- gsub(paste0("((?:connect|resolve|host|server|connection|url)\\s+",
                     "(?:to\\s+)?['\"]?)([A-Za-z0-9][-A-Za-z0-9.]*\\.",
                     "[A-Za-z]{2,})(:\\d+)?"),
              "\\1[host]", msg, perl = TRUE, ignore.case = TRUE)
  msg <- gsub("(?i)\\b(pid|process)\\s*:?\\s*'?\\d{2,}'?", "\\1 [pid]", msg,
              perl = TRUE)
  if (nchar(msg) > max_length) {
    msg <- paste0(substr(msg, 1L, max_length - 3L), "...")
  }
  msg
}
