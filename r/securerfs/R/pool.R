# SecureSessionPool: sessions made ready in advance.

#' A pool of sandboxed sessions
#'
#' @description
#' securer's `SecureSessionPool`: `size` sessions created at once;
#' `$execute()` takes an idle session and runs the code. By default
#' (`reset_between_uses = TRUE`) the session is then closed and replaced by a
#' fresh one, so that every use starts with a new R state and an empty
#' workspace: nothing one use leaves (variables, `trace()`d functions, files
#' in `/work`) reaches the next. With `reset_between_uses = FALSE` the
#' session is given back as it is. A session found dead when it is taken
#' (closed, or its directory gone) is replaced by a new one, and so is a
#' session found dead after a run.
#'
#' Use the default whenever the pool serves more than one user or caller
#' that must not see another's data; set `reset_between_uses = FALSE` only
#' when every use belongs to one user who wants state kept between calls.
#'
#' @details
#' A fresh session comes from the mount's warm pool of workers (forked from
#' its zygote), so the reset costs one session creation per use. Unlike
#' securer (whose default is `FALSE`), the reset is the default, and it is a
#' fresh session (state and workspace), not a restart of R.
#'
#' With `snapshot`, every session of the pool starts from the same snapshot
#' file (see `SecureSession$snapshot()`): data prepared once (a fitted model,
#' a loaded data set) is in each session, and in each fresh one after a reset.
#'
#' @seealso [SecureSession]
#' @examples
#' \dontrun{
#' prep <- SecureSession$new()
#' prep$execute("fit <- lm(mpg ~ wt, mtcars)")
#' prep$snapshot("prepared.snap")
#' prep$close()
#' pool <- SecureSessionPool$new(size = 2, snapshot = "prepared.snap")
#' pool$execute("coef(fit)[[2]]")
#' pool$close()
#'
#' pool <- SecureSessionPool$new(size = 2)
#' pool$execute("1 + 1")
#' pool$status()
#' pool$close()
#' }
#' @export
SecureSessionPool <- R6::R6Class("SecureSessionPool",
  cloneable = FALSE,
  public = list(
    #' @description Create the pool and its sessions.
    #' @param size Number of sessions, 1 to 100.
    #' @param tools A list of [securer_tool()] objects.
    #' @param sandbox Logical: run in the jail.
    #' @param limits Resource limits, as for [SecureSession].
    #' @param verbose Logical: diagnostic messages.
    #' @param reset_between_uses Logical: `TRUE` (default) closes the session
    #'   after each use and puts a fresh one (new R state, empty workspace) in
    #'   its place; `FALSE` gives it back as it is, state and files kept. A fresh
    #'   session that cannot be made leaves the slot empty, and the next use
    #'   that takes it makes one (its error goes to that caller).
    #' @param snapshot Path of a snapshot file (see `SecureSession$snapshot()`),
    #'   or `NULL`: every session of the pool (and every fresh one that replaces
    #'   a used one) starts from it, with the same prepared data and files.
    #' @param ... More arguments for `SecureSession$new()`, such as `mount`.
    #' @return A new `SecureSessionPool` object.
    initialize = function(size = 4, tools = list(), sandbox = TRUE,
                          limits = NULL, verbose = FALSE,
                          reset_between_uses = TRUE, snapshot = NULL, ...) {
      size <- as.integer(size)
      if (length(size) != 1L || is.na(size) || size < 1L) {
        stop("`size` must be at least 1.", call. = FALSE)
      }
      if (size > 100L) stop("`size` must not exceed 100.", call. = FALSE)
      private$args <- c(list(tools = tools, sandbox = sandbox,
                             limits = limits, verbose = verbose,
                             snapshot = snapshot), list(...))
      private$reset <- isTRUE(reset_between_uses)
      private$sessions <- vector("list", size)
      private$busy <- rep(FALSE, size)
      for (i in seq_len(size)) private$sessions[[i]] <- private$new_session()
    },

    #' @description Run code in an idle session (see the class's description for
    #'   what happens to the session afterwards).
    #' @param code R code, a string.
    #' @param timeout Seconds for the run (default 30); `NULL`: none.
    #' @param acquire_timeout Seconds to wait for an idle session (default 30;
    #'   `NULL`: do not wait); after that, an error of class `securerfs_blocked`,
    #'   "All sessions are busy."
    #' @return The value, as `SecureSession$execute()` returns it (and its
    #'   errors). An error when the pool is closed.
    #' @examples
    #' \dontrun{
    #' pool <- SecureSessionPool$new(size = 2)
    #' pool$execute("1 + 1")
    #' pool$close()
    #' }
    execute = function(code, timeout = 30, acquire_timeout = 30) {
      if (private$closed) stop("Pool is closed.", call. = FALSE)
      idx <- private$acquire()
      if (is.null(idx) && !is.null(acquire_timeout)) {
        deadline <- Sys.time() + acquire_timeout
        while (is.null(idx) && Sys.time() < deadline) {
          Sys.sleep(0.05)
          idx <- private$acquire()
        }
      }
      if (is.null(idx)) {
        abort("All sessions are busy.", class = "securerfs_blocked")
      }
      on.exit(private$release(idx), add = TRUE)
      private$sessions[[idx]]$execute(code, timeout = timeout)
    },

    #' @description Number of sessions (slots) in the pool.
    #' @return An integer; 0 once closed.
    size = function() length(private$sessions),

    #' @description Number of sessions not in use.
    #' @return An integer; 0 once closed.
    available = function() {
      if (private$closed) return(0L)
      sum(!private$busy)
    },

    #' @description Counts of the pool's sessions.
    #' @return A list of integers: `total`, `busy`, `idle` (not in use and
    #'   alive) and `dead` (closed, gone, or an empty slot); all 0 once closed.
    status = function() {
      if (private$closed) {
        return(list(total = 0L, busy = 0L, idle = 0L, dead = 0L))
      }
      alive <- vapply(private$sessions, function(s) !is.null(s) && s$is_alive(),
                      logical(1))
      list(total = length(private$sessions), busy = sum(private$busy),
           idle = sum(!private$busy & alive), dead = sum(!alive))
    },

    #' @description One line describing the pool: its size, idle and busy
    #'   sessions, or that it is closed.
    #' @param ... Ignored.
    #' @return A string.
    format = function(...) {
      if (private$closed) return("<SecureSessionPool> [closed]")
      sprintf("<SecureSessionPool> size=%d idle=%d busy=%d",
              length(private$sessions), sum(!private$busy),
              sum(private$busy))
    },

    #' @description Print the pool's one-line description.
    #' @param ... Ignored.
    #' @return The pool, invisibly.
    print = function(...) {
      cat(self$format(), "\n", sep = "")
      invisible(self)
    },

    #' @description Close every session of the pool; after that `$execute()`
    #'   is an error.
    #' @return The pool, invisibly.
    close = function() {
      for (s in private$sessions) if (!is.null(s)) try(s$close(), silent = TRUE)
      private$sessions <- list()
      private$busy <- logical()
      private$closed <- TRUE
      invisible(self)
    }
  ),

  private = list(
    sessions = list(),
    busy = logical(),
    closed = FALSE,
    args = list(),
    reset = FALSE,

    new_session = function() do.call(SecureSession$new, private$args),

    # An idle slot, with a live session in it (a dead or missing one is
    # replaced here; if that fails, the error is the caller's and the slot
    # stays free).
    acquire = function() {
      idle <- which(!private$busy)
      if (length(idle) == 0L) return(NULL)
      idx <- idle[[1L]]
      s <- private$sessions[[idx]]
      if (is.null(s) || !s$is_alive()) {
        if (!is.null(s)) s$close()
        private$sessions[idx] <- list(NULL)
        private$sessions[[idx]] <- private$new_session()
      }
      private$busy[[idx]] <- TRUE
      idx
    },

    # After a use.  With reset, the used session never goes back: it is
    # closed (its worker, R state and workspace go) and a fresh one is made
    # for the next use -- a pooled worker of the mount, forked from its
    # zygote, so this is cheap.  If the fresh one cannot be made now, the
    # slot is left empty and acquire() makes one.
    release = function(idx) {
      if (private$closed || idx > length(private$sessions)) return()
      s <- private$sessions[[idx]]
      if (private$reset || is.null(s) || !s$is_alive()) {
        if (!is.null(s)) s$close()
        private$sessions[idx] <- list(NULL)
        fresh <- tryCatch(private$new_session(), error = function(e) {
          if (isTRUE(private$args$verbose)) {
            message("[securerfs] pool: no fresh session for now (",
                    conditionMessage(e), "); the next use makes one")
          }
          NULL
        })
        if (!is.null(fresh)) private$sessions[[idx]] <- fresh
      }
      private$busy[[idx]] <- FALSE
    }
  )
)
