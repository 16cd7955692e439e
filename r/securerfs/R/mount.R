# Finding the mount, or mounting a private one.

.securerfs <- new.env(parent = emptyenv())
.securerfs$mounts <- list()   # "strict" / "none" -> list(dir, process, log)
.securerfs$warned <- character()
.securerfs$info <- list()     # mount dir -> its config (mount_info())
.securerfs$given <- list()    # a mount named by the caller -> its checked path
.securerfs$limits_seen <- NULL # the last limits' JSON to write (limits_to_write())
.securerfs$eval_cons <- list() # session dir -> its open eval descriptor (src/eval.c)

is_mount <- function(dir) {
  !is.null(dir) && file.exists(file.path(dir, "README")) &&
    dir.exists(file.path(dir, "sessions"))
}

# The config of a mount, read once per R process and mount directory (the
# defaults a new session has: timeout, limits, max_code_bytes).
mount_info <- function(dir) {
  info <- .securerfs$info[[dir]]
  if (is.null(info)) {
    info <- mount_config(dir)
    if (length(info)) .securerfs$info[[dir]] <- info
  }
  info
}

# What a new session of mount dir must write to its limits file: the JSON,
# or NULL when the limits are the mount's defaults.  Worked out once for the
# same limits and mount (jsonlite's encoder is most of the R time of a
# SecureSession$new()).
limits_to_write <- function(limits, sandbox, dir) {
  seen <- .securerfs$limits_seen
  if (!is.null(seen) && identical(seen$dir, dir) &&
      identical(seen$sandbox, sandbox) && identical(seen$limits, limits)) {
    return(seen$lj)
  }
  lj <- limits_json(limits, sandbox)
  if (!is.null(lj) && limits_are_defaults(lj, dir)) lj <- NULL
  .securerfs$limits_seen <- list(dir = dir, sandbox = sandbox,
                                 limits = limits, lj = lj)
  lj
}

# Forget what was learnt of mount dir (after it failed to make a session:
# it may have been restarted with other settings, or be gone).
mount_forget <- function(dir) {
  .securerfs$info[[dir]] <- NULL
  .securerfs$given <- list()
  .securerfs$limits_seen <- NULL
}

# Whether the limits JSON lj sets exactly the mount's defaults (then a new
# session needs no write of its limits file).
limits_are_defaults <- function(lj, dir) {
  def <- mount_info(dir)$limits
  if (is.null(def)) return(FALSE)
  want <- jsonlite::fromJSON(lj, simplifyVector = FALSE)
  for (nm in names(want)) {
    a <- want[[nm]]
    b <- def[[nm]]
    if (is.null(a) != is.null(b)) return(FALSE)
    if (!is.null(a) && !isTRUE(all.equal(as.numeric(a), as.numeric(b)))) {
      return(FALSE)
    }
  }
  TRUE
}

mount_config <- function(dir) {
  tryCatch(jsonlite::fromJSON(read_file(file.path(dir, "config"))),
           error = function(e) list())
}

find_securerfs_bin <- function() {
  bin <- nonempty_string(getOption("securerfs.bin")) %||%
    nonempty_string(Sys.getenv("SECURERFS_BIN")) %||%
    nonempty_string(unname(Sys.which("securerfs")))
  if (is.null(bin) || !file.exists(bin)) {
    abort(paste0(
      "securerfs not found",
      if (!is.null(bin)) paste0(" at ", bin) else "",
      ": install it (scripts/run in the securerfs repository builds and ",
      "mounts it) and put it on PATH, or set SECURERFS_BIN or ",
      "options(securerfs.bin = ) to the securerfs program, or point ",
      "SECURERFS_MOUNT / options(securerfs.mount = ) at a running mount"),
      class = "securerfs_mount_error")
  }
  normalizePath(bin)
}

#' Find or start a securerfs mount
#'
#' @description
#' `securerfs_mount()` returns the directory of the securerfs mount that
#' sessions use: the argument `mount`, else the option `securerfs.mount`,
#' else the environment variable `SECURERFS_MOUNT`. If none is set it mounts
#' a private one in R's temporary directory. `securerfs_unmount()` unmounts
#' the private mounts (R does it on exit).
#'
#' @details
#' A private mount: the `securerfs` program is found through the option
#' `securerfs.bin`, the environment variable `SECURERFS_BIN` or `PATH` (an
#' error of class `securerfs_mount_error` says what to install or set when it
#' is missing), started in the foreground under \pkg{processx} (supervised,
#' so it ends if R dies) as `securerfs -f -o pool=N DIR` (option
#' `securerfs.pool`, default 1; option `securerfs.options`: more `-o` options
#' as a character vector), and ready when `DIR/README` can be read (at most
#' 15 seconds). It is unmounted with `fusermount3 -u` when R exits or the
#' package is unloaded. `sandbox = FALSE` uses a second private mount,
#' started with `-o sandbox=none`. A private mount whose daemon has ended is
#' replaced by a new one at the next call.
#'
#' A mount given by the caller is used as it is: when its sandbox does not
#' match `sandbox`, a warning says so (once per message), or an error of
#' class `securerfs_sandbox_error` with `sandbox_strict = TRUE` when a
#' sandbox was asked for but the mount has none. A directory that is not a
#' securerfs mount (no `README` or `sessions/`) is an error of class
#' `securerfs_mount_error`.
#'
#' @param sandbox Logical: whether sessions run in the jail.
#' @param sandbox_strict Logical: an error instead of a warning when the
#'   mount given runs without a sandbox although one was asked for.
#' @param mount Directory of a running mount, or `NULL`.
#' @return `securerfs_mount()`: the mount directory, a string.
#'   `securerfs_unmount()`: `NULL`, invisibly.
#' @examples
#' \dontrun{
#' dir <- securerfs_mount()
#' readLines(file.path(dir, "README"))
#' securerfs_unmount()
#' }
#' @export
securerfs_mount <- function(sandbox = TRUE, sandbox_strict = FALSE,
                            mount = NULL) {
  given <- nonempty_string(mount) %||%
    nonempty_string(getOption("securerfs.mount")) %||%
    nonempty_string(Sys.getenv("SECURERFS_MOUNT"))
  if (!is.null(given)) {
    # Checked once per R process for the same mount and sandbox wishes:
    # the checks are four requests to the mount, on every new session's
    # path.  A mount that went away fails the session's clone instead,
    # which forgets this (mount_forget()).
    key <- paste(given, isTRUE(sandbox), isTRUE(sandbox_strict))
    known <- .securerfs$given[[key]]
    if (!is.null(known)) return(known)
    if (!is_mount(given)) {
      abort(sprintf("no securerfs mount at %s (README or sessions/ missing)",
                    given), class = "securerfs_mount_error")
    }
    path <- normalizePath(given)
    mode <- mount_info(path)$sandbox %||% "strict"
    if (isTRUE(sandbox) && identical(mode, "none")) {
      msg <- sprintf(paste0("the securerfs mount at %s runs without a ",
                            "sandbox (-o sandbox=none)"), given)
      if (isTRUE(sandbox_strict)) {
        abort(paste0("sandbox_strict is TRUE but ", msg),
              class = "securerfs_sandbox_error")
      }
      warn_once(paste0(msg, "; sessions are not jailed"))
    } else if (!isTRUE(sandbox) && !identical(mode, "none")) {
      warn_once(sprintf(paste0(
        "sandbox = FALSE is ignored: the securerfs mount at %s runs with its ",
        "sandbox; start it with -o sandbox=none, or leave SECURERFS_MOUNT ",
        "and the securerfs.mount option unset to let securerfs start its own"),
        given))
    }
    .securerfs$given[[key]] <- path
    return(path)
  }
  key <- if (isTRUE(sandbox)) "strict" else "none"
  m <- .securerfs$mounts[[key]]
  if (!is.null(m) && is_mount(m$dir) && m$process$is_alive()) {
    return(m$dir)
  }
  if (!is.null(m)) unmount_private(key)
  start_private_mount(key)
}

warn_once <- function(msg) {
  if (!msg %in% .securerfs$warned) {
    .securerfs$warned <- c(.securerfs$warned, msg)
    warning(msg, call. = FALSE)
  }
}

start_private_mount <- function(key) {
  bin <- find_securerfs_bin()
  dir <- tempfile(paste0("securerfs-", key, "-"))
  dir.create(dir, mode = "0700")
  log <- paste0(dir, ".log")
  opts <- c(paste0("pool=", as.integer(getOption("securerfs.pool", 1L))),
            if (key == "none") "sandbox=none",
            getOption("securerfs.options"))
  p <- processx::process$new(
    bin, c("-f", "-o", paste(opts, collapse = ","), dir),
    stdout = log, stderr = "2>&1", stdin = NULL,
    cleanup = FALSE, supervise = TRUE
  )
  deadline <- Sys.time() + 15
  while (!is_mount(dir)) {
    if (!p$is_alive() || Sys.time() > deadline) {
      if (p$is_alive()) {
        try(p$signal(15L), silent = TRUE)
        try(p$wait(2000), silent = TRUE)
        try(p$kill(), silent = TRUE)
      }
      tail <- tryCatch(utils::tail(readLines(log, warn = FALSE), 5),
                       error = function(e) character())
      unlink(dir, recursive = TRUE)
      abort(paste0("securerfs (", bin, ") did not mount ", dir,
                   " within 15 s", if (length(tail))
                     paste0(":\n", paste(tail, collapse = "\n")) else ""),
            class = "securerfs_mount_error")
    }
    Sys.sleep(0.02)
  }
  .securerfs$mounts[[key]] <- list(dir = dir, process = p, log = log,
                                    pid = p$get_pid())
  if (is.null(.securerfs$finalizer)) {
    # Unmount the private mounts when R exits.
    .securerfs$finalizer <- new.env(parent = emptyenv())
    reg.finalizer(.securerfs$finalizer, function(e) unmount_all(),
                  onexit = TRUE)
  }
  dir
}

unmount_private <- function(key) {
  m <- .securerfs$mounts[[key]]
  .securerfs$mounts[[key]] <- NULL
  if (is.null(m)) return(invisible())
  debug <- function(...) if (nzchar(Sys.getenv("SECURERFS_DEBUG")))
    cat("securerfs: unmount ", key, ": ", ..., "\n", sep = "", file = stderr())
  # At R's exit processx may have let go of the process handle already, so
  # work from the mount and the pid rather than the handle.
  fusermount <- Sys.which(c("fusermount3", "fusermount"))
  fusermount <- fusermount[nzchar(fusermount)]
  wait_unmounted <- function(secs) {
    deadline <- Sys.time() + secs
    while (is_mount(m$dir) && Sys.time() < deadline) Sys.sleep(0.02)
    !is_mount(m$dir)
  }
  if (is_mount(m$dir) && length(fusermount)) {
    try(system2(fusermount[[1]], c("-u", shQuote(m$dir)), stdout = FALSE,
                stderr = FALSE), silent = TRUE)
  }
  debug("after fusermount mounted=", is_mount(m$dir))
  if (!wait_unmounted(0.5)) {
    try(tools::pskill(m$pid, tools::SIGTERM), silent = TRUE)
    wait_unmounted(3)
    debug("after SIGTERM mounted=", is_mount(m$dir))
  }
  if (is_mount(m$dir)) {
    try(tools::pskill(m$pid, tools::SIGKILL), silent = TRUE)
    if (length(fusermount)) {
      try(system2(fusermount[[1]], c("-u", "-z", shQuote(m$dir)),
                  stdout = FALSE, stderr = FALSE), silent = TRUE)
    }
  }
  # reap the daemon
  try(m$process$wait(2000), silent = TRUE)
  suppressWarnings(try(file.remove(m$dir), silent = TRUE))
  invisible()
}

unmount_all <- function() {
  # Sessions' eval descriptors first: an open file keeps a mount busy.
  for (dir in names(.securerfs$eval_cons)) eval_con_drop(dir)
  for (key in names(.securerfs$mounts)) {
    try(unmount_private(key), silent = TRUE)
  }
  invisible()
}

#' @rdname securerfs_mount
#' @export
securerfs_unmount <- function() {
  unmount_all()
  invisible(NULL)
}
