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

# Copy a mount file (sessions/N/snapshot) to dest, in 1 MiB chunks, through
# a temporary file of mode 0600 renamed into place.
copy_stream <- function(src, dest) {
  tmp <- paste0(dest, ".tmp-", Sys.getpid())
  input <- tryCatch(suppressWarnings(file(src, open = "rb")), error = function(e) {
    abort(sprintf("cannot read %s (%s)", src, conditionMessage(e)),
          class = "securerfs_io_error")
  })
  on.exit(close(input))
  out <- file(tmp, open = "wb")
  Sys.chmod(tmp, "0600", use_umask = FALSE)
  ok <- FALSE
  on.exit(if (!ok) unlink(tmp), add = TRUE)
  repeat {
    chunk <- readBin(input, what = "raw", n = 1048576L)
    if (length(chunk) == 0L) break
    writeBin(chunk, out)
  }
  close(out)
  if (!file.rename(tmp, dest)) {
    abort(sprintf("cannot write %s", dest), class = "securerfs_io_error")
  }
  ok <- TRUE
  invisible(dest)
}

# Write the file src into a mount file (sessions/N/snapshot): the mount
# answers on close, which fails (EINVAL, ENOSPC, EBUSY) when it refuses.
restore_stream <- function(src, dest) {
  input <- file(src, open = "rb")
  on.exit(close(input))
  out <- tryCatch(suppressWarnings(file(dest, open = "wb")), error = function(e) {
    abort(sprintf("cannot open %s for writing", dest), class = "securerfs_io_error")
  })
  done <- FALSE
  on.exit(if (!done) try(close(out), silent = TRUE), add = TRUE)
  repeat {
    chunk <- readBin(input, what = "raw", n = 1048576L)
    if (length(chunk) == 0L) break
    writeBin(chunk, out)
  }
  done <- TRUE
  # A warning is muffled, not caught: unwinding out of close() would leave
  # the connection half closed.
  msg <- NULL
  tryCatch(withCallingHandlers(close(out), warning = function(w) {
    msg <<- conditionMessage(w)
    invokeRestart("muffleWarning")
  }), error = function(e) msg <<- conditionMessage(e))
  if (!is.null(msg)) {
    abort(sprintf("the mount refused it (%s)", msg), class = "securerfs_io_error")
  }
  invisible(TRUE)
}

# A new session's name from the mount's clone file: one read (src/eval.c;
# read_file() would ask once more for the end, and an R connection's set-up
# costs more than the request).
read_clone <- function(dir) {
  .Call(securerfs_read_clone, file.path(dir, "clone"))
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
#' Used when `sanitize_errors = TRUE`: absolute paths, IP addresses,
#' host names in connection errors and process ids are replaced, and the
#' message is cut at `max_length` characters.
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

# ---- copies out of the sandbox and walks of a workspace -------------------
#
# A workspace is written by the sandboxed code, so nothing in it is trusted
# on the host: a file may carry set-id bits (the mount reports modes without
# them, but a copy must not depend on that), may be far larger than the
# caller wants on its disk, may grow while it is read, and a directory may be
# a link back to itself.

# The largest file $download() copies unless told otherwise.
download_max_bytes_default <- function() {
  getOption("securerfs.download_max_bytes", 256 * 1024^2)
}

check_max_bytes <- function(max_bytes) {
  if (!is.numeric(max_bytes) || length(max_bytes) != 1L ||
      is.na(max_bytes) || max_bytes < 0) {
    stop("`max_bytes` must be a single non-negative number of bytes.",
         call. = FALSE)
  }
  max_bytes
}

# Copy src (a regular file of a workspace) to dest on the host.  Its size is
# checked against max_bytes before a byte is read, and no more than
# max_bytes are read even if it grows meanwhile.  The copy is a new file
# (created private, then renamed over dest: a link at dest is replaced, not
# followed) with a fixed mode: 0644, or 0755 when the source is executable
# by its owner, less the umask; never set-id or sticky (no copy.mode).
copy_out <- function(src, dest, max_bytes, what = basename(src)) {
  info <- file.info(src, extra_cols = FALSE)
  if (is.na(info$size) || isTRUE(info$isdir)) {
    stop(sprintf("No file %s in the session's workspace.", what),
         call. = FALSE)
  }
  if (info$size > max_bytes) {
    stop(sprintf("%s is %.0f bytes, over max_bytes (%.0f): not copied.",
                 what, info$size, max_bytes), call. = FALSE)
  }
  owner_exec <- bitwAnd(as.integer(info$mode), 64L) != 0L # 0100
  mode <- bitwAnd(if (owner_exec) 493L else 420L,         # 0755, 0644
                  bitwNot(as.integer(Sys.umask(NA))))
  tmp <- tempfile(".securerfs-copy-", tmpdir = dirname(dest))
  old <- Sys.umask("077")
  out <- tryCatch(file(tmp, open = "wb"), error = function(e) e,
                  finally = Sys.umask(old))
  if (inherits(out, "error")) {
    stop(sprintf("Could not write %s: %s", dest, conditionMessage(out)),
         call. = FALSE)
  }
  done <- FALSE
  on.exit({
    try(close(out), silent = TRUE)
    if (!done) unlink(tmp)
  })
  inp <- tryCatch(suppressWarnings(file(src, open = "rb")),
                  error = function(e) {
                    stop(sprintf("Could not read %s from the workspace.", what),
                         call. = FALSE)
                  })
  on.exit(close(inp), add = TRUE)
  total <- 0
  repeat {
    chunk <- readBin(inp, what = "raw",
                     n = as.integer(min(1048576, max_bytes - total + 1)))
    if (length(chunk) == 0L) break
    total <- total + length(chunk)
    if (total > max_bytes) {
      stop(sprintf("%s grew past max_bytes (%.0f) while it was copied: not copied.",
                   what, max_bytes), call. = FALSE)
    }
    writeBin(chunk, out)
  }
  close(out)
  out <- NULL
  Sys.chmod(tmp, as.octmode(mode), use_umask = FALSE)
  if (!file.rename(tmp, dest)) {
    stop(sprintf("Could not write %s.", dest), call. = FALSE)
  }
  done <- TRUE
  invisible(dest)
}

# The regular files below root, as paths relative to it, with size and
# mtime: walked one directory at a time, never following a link (an entry is
# a link when Sys.readlink() gives a text, or NA: one the mount will not
# read), at most max_depth deep and max_entries entries in all, so that no
# tree the code builds -- links to ".", a directory swapped for a link while
# the walk runs -- makes it loop or run away.  list.files(recursive = TRUE)
# follows links to directories.
workspace_walk <- function(root, max_depth = 64L, max_entries = 100000L) {
  names <- character()
  sizes <- numeric()
  mtimes <- .POSIXct(numeric(), tz = "")
  queue <- list(list(rel = "", depth = 0L))
  seen <- 0L
  while (length(queue) && seen < max_entries) {
    item <- queue[[1L]]
    queue <- queue[-1L]
    dir <- if (nzchar(item$rel)) file.path(root, item$rel) else root
    ents <- sort(list.files(dir, all.files = TRUE, no.. = TRUE))
    if (!length(ents)) next
    ents <- utils::head(ents, max_entries - seen)
    seen <- seen + length(ents)
    rel <- if (nzchar(item$rel)) file.path(item$rel, ents) else ents
    full <- file.path(root, rel)
    lnk <- Sys.readlink(full)
    plain <- !is.na(lnk) & !nzchar(lnk)
    if (!any(plain)) next
    rel <- rel[plain]
    info <- file.info(full[plain], extra_cols = FALSE)
    is_file <- !is.na(info$size) & !info$isdir
    names <- c(names, rel[is_file])
    sizes <- c(sizes, info$size[is_file])
    mtimes <- c(mtimes, info$mtime[is_file])
    if (item$depth < max_depth) {
      for (d in rel[!is.na(info$isdir) & info$isdir]) {
        queue[[length(queue) + 1L]] <- list(rel = d, depth = item$depth + 1L)
      }
    }
  }
  o <- order(names)
  data.frame(name = names[o], size = sizes[o], mtime = mtimes[o],
             stringsAsFactors = FALSE, row.names = NULL)
}

# A result.json's text as lists, unsimplified (R/zzz.R puts a faster one of
# the same answers in its place at load).
parse_result <- function(txt) jsonlite::parse_json(txt, simplifyVector = FALSE)
