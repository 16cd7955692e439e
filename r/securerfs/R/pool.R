# SecureSessionPool: sessions made ready in advance.

#' A pool of sandboxed sessions
#'
#' @description
#' securer's \code{SecureSessionPool}: \code{size} sessions created at once;
#' \code{$execute()} takes an idle one and runs the code. By default
#' (\code{reset_between_uses = TRUE}) the session is then closed and a fresh
#' one (new R state, empty workspace) takes its place, so nothing one use
#' leaves reaches the next; with \code{FALSE} it is given back as it is. A
#' session found dead when it is taken (closed, or its directory gone) is
#' replaced by a new one, and so is a session that died during a run.
#'
#' Use the default whenever the pool serves more than one user or caller
#' that must not see another's data; set \code{reset_between_uses = FALSE}
#' only when every use belongs to one user who wants state kept between
#' calls.
#'
#' @examples
#' \dontrun{
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
    #' @param size Number of sessions (1 to 100).
    #' @param tools A list of \code{\link{securer_tool}()} objects.
    #' @param sandbox Logical: run in the jail.
    #' @param limits Resource limits, as for \code{\link{SecureSession}}.
    #' @param verbose Logical: diagnostic messages.
    #' @param reset_between_uses Logical: \code{TRUE} (default) closes the
    #'   session after each use and puts a fresh one in its place;
    #'   \code{FALSE} gives it back with its state and files.
    #' @param ... More arguments for \code{SecureSession$new()}, such as
    #'   \code{mount}.
    initialize = function(size = 4, tools = list(), sandbox = TRUE,
                          limits = NULL, verbose = FALSE,
                          reset_between_uses = TRUE, ...) {
      size <- as.integer(size)
      if (length(size) != 1L || is.na(size) || size < 1L) {
        stop("`size` must be at least 1.", call. = FALSE)
      }
      if (size > 100L) stop("`size` must not exceed 100.", call. = FALSE)
      private$args <- c(list(tools = tools, sandbox = sandbox,
                             limits = limits, verbose = verbose), list(...))
      private$reset <- isTRUE(reset_between_uses)
      private$sessions <- vector("list", size)
      private$busy <- rep(FALSE, size)
      for (i in seq_len(size)) private$sessions[[i]] <- private$new_session()
    },

    #' @description Run code in an idle session.
    #' @param code R code.
    #' @param timeout Seconds for the run (default 30), \code{NULL}: none.
    #' @param acquire_timeout Seconds to wait for an idle session (default
    #'   30).
    #' @return The value, as \code{SecureSession$execute()}.
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

    #' @description Number of sessions.
    #' @return An integer.
    size = function() length(private$sessions),

    #' @description Number of sessions not in use.
    #' @return An integer.
    available = function() {
      if (private$closed) return(0L)
      sum(!private$busy)
    },

    #' @description Counts of sessions.
    #' @return A list: \code{total}, \code{busy}, \code{idle}, \code{dead}.
    status = function() {
      if (private$closed) {
        return(list(total = 0L, busy = 0L, idle = 0L, dead = 0L))
      }
      alive <- vapply(private$sessions, function(s) !is.null(s) && s$is_alive(),
                      logical(1))
      list(total = length(private$sessions), busy = sum(private$busy),
           idle = sum(!private$busy & alive), dead = sum(!alive))
    },

    #' @description One line describing the pool.
    #' @param ... Ignored.
    #' @return A string.
    format = function(...) {
      if (private$closed) return("<SecureSessionPool> [closed]")
      sprintf("<SecureSessionPool> size=%d idle=%d busy=%d",
              length(private$sessions), sum(!private$busy),
              sum(private$busy))
    },

    #' @description Print the pool.
    #' @param ... Ignored.
    #' @return Invisible self.
    print = function(...) {
      cat(self$format(), "\n", sep = "")
      invisible(self)
    },

    #' @description Close every session.
    #' @return Invisible self.
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
