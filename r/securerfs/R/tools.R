# Tools: securer_tool() objects, their definitions in sessions/N/tools/, and
# the state file of the package's tool server (inst/tool_server.R).

tool_types <- c("character", "numeric", "integer", "logical", "list",
                "data.frame", "")

#' Define a tool that sandboxed code can call
#'
#' @description
#' A tool is an R function that runs on the host, outside the sandbox. In the
#' session it is an R function called `name` with the arguments named in
#' `args`; the sandbox checks their types, and the call is carried out by a
#' tool process of this package (`Rscript` running the package's
#' `tool_server.R`, a `server`-mode tool of the mount) which calls `fn` with
#' the arguments.
#'
#' @details
#' When a session with tools starts, `fn` and everything it encloses are
#' saved with `saveRDS()` into a private file (mode 0600, in a directory of
#' R's temporary directory that only this R process wrote); the session's
#' `tools/NAME.json` definitions name that file in the tool process's
#' command. A function of the global environment gets copies of the global
#' objects its code names (the global environment itself is not serialized).
#' The tool process runs as the mount's user, in the client's working
#' directory at the time the session was created, with the client's library
#' paths, and ends with the session; its time per call is the option
#' `securerfs.tool_timeout` (default 60 seconds). The tool process's address
#' space is bounded by the option `securerfs.tool_memory` (bytes, default
#' 4 GiB): an allocation past it is the tool's error.
#'
#' Nothing that comes from the sandbox is ever evaluated as code or
#' unserialized: arguments and results cross as JSON, with jsonlite's
#' conventions (a data frame as rows, `NA` as `null`). What `fn` prints goes
#' to the tool process's standard error, not to the session.
#'
#' @param name The function's name in the session: a syntactic R name (not
#'   starting with `.securerfs`).
#' @param description What the tool does (shown to the model by
#'   [as_ellmer_tool()]).
#' @param fn The function to run on the host.
#' @param args A named list: argument name to type, one of `"character"`,
#'   `"numeric"`, `"integer"`, `"logical"`, `"list"`, `"data.frame"` or `""`
#'   (any; `"any"` and `NULL` mean the same). `list()` for none.
#' @return An object of class `securer_tool`: a list with `name`,
#'   `description`, `fn` and `args`. `format()` returns a string, `print()`
#'   its argument invisibly.
#' @examples
#' add <- securer_tool("add", "Add two numbers",
#'   fn = function(a, b) a + b,
#'   args = list(a = "numeric", b = "numeric"))
#' add
#' @export
securer_tool <- function(name, description, fn, args = list()) {
  if (!is.character(name) || length(name) != 1L || is.na(name) ||
      !nzchar(name)) {
    stop("`name` must be a non-empty string.", call. = FALSE)
  }
  if (!is.character(description) || length(description) != 1L) {
    stop("`description` must be a character string.", call. = FALSE)
  }
  if (!is.function(fn)) {
    stop("`fn` must be a function, not ", class(fn)[1], ".", call. = FALSE)
  }
  if (!is.list(args)) {
    stop("`args` must be a list, not ", class(args)[1], ".", call. = FALSE)
  }
  if (!is_syntactic(name) || startsWith(name, ".securerfs")) {
    stop("Tool name must be a valid R identifier, not \"", name, "\".",
         call. = FALSE)
  }
  arg_names <- names(args)
  if (length(args) > 0L) {
    if (is.null(arg_names) || any(!nzchar(arg_names))) {
      stop("`args` must be a named list.", call. = FALSE)
    }
    bad <- arg_names[!vapply(arg_names, is_syntactic, logical(1))]
    if (length(bad)) {
      stop("Argument names must be valid R identifiers: ",
           paste0("\"", bad, "\"", collapse = ", "), ".", call. = FALSE)
    }
    if (anyDuplicated(arg_names)) {
      stop("Duplicate argument names.", call. = FALSE)
    }
    args <- lapply(args, function(t) {
      if (is.null(t) || identical(t, "any")) return("")
      if (!is.character(t) || length(t) != 1L || !t %in% tool_types) {
        stop("Argument types must be one of ",
             paste0("\"", tool_types, "\"", collapse = ", "), ".",
             call. = FALSE)
      }
      t
    })
  } else {
    args <- structure(list(), names = character())
  }
  structure(list(name = name, description = description, fn = fn,
                 args = args),
            class = "securer_tool")
}

is_syntactic <- function(x) {
  is.character(x) && length(x) == 1L && !is.na(x) && nzchar(x) &&
    identical(make.names(x), x)
}

#' @rdname securer_tool
#' @param x A `securer_tool`.
#' @param ... Ignored.
#' @export
format.securer_tool <- function(x, ...) {
  desc <- x$description
  if (nchar(desc) > 60L) desc <- paste0(substr(desc, 1L, 57L), "...")
  args <- if (length(x$args)) {
    paste0(names(x$args), " (", ifelse(nzchar(unlist(x$args)),
                                        unlist(x$args), "any"), ")",
           collapse = ", ")
  } else {
    "none"
  }
  paste0("<securer_tool>\n  Name: ", x$name, "\n  Description: ", desc,
         "\n  Args: ", args)
}

#' @rdname securer_tool
#' @export
print.securer_tool <- function(x, ...) {
  cat(format(x, ...), "\n", sep = "")
  invisible(x)
}

validate_tools <- function(tools) {
  if (is.null(tools) || length(tools) == 0L) return(list())
  if (inherits(tools, "securer_tool")) tools <- list(tools)
  if (!is.list(tools)) {
    stop("`tools` must be a list of securer_tool() objects.", call. = FALSE)
  }
  ok <- vapply(tools, inherits, logical(1), what = "securer_tool")
  if (!all(ok)) {
    stop("Each tool must be created with securer_tool().", call. = FALSE)
  }
  nms <- vapply(tools, function(t) t$name, character(1))
  if (anyDuplicated(nms)) {
    stop("Duplicate tool names: ",
         paste0("\"", unique(nms[duplicated(nms)]), "\"", collapse = ", "),
         ".", call. = FALSE)
  }
  names(tools) <- nms
  tools
}

tool_server_script <- function() {
  path <- system.file("tool_server.R", package = "securerfs")
  if (!nzchar(path)) {
    stop("securerfs is not installed properly: tool_server.R is missing",
         call. = FALSE)
  }
  path
}

# A private directory of the client (mode 0700) for state files.
private_dir <- function() {
  dir <- .securerfs$private_dir
  if (is.null(dir) || !dir.exists(dir)) {
    dir <- tempfile("securerfs-client-")
    dir.create(dir, mode = "0700")
    Sys.chmod(dir, "0700", use_umask = FALSE)
    .securerfs$private_dir <- dir
  }
  dir
}

# Functions of the global environment do not carry it when serialized: give
# such a function (and the global functions it uses) a private environment
# holding copies of the global objects its code names, so the tool process
# sees the same data.
portable_functions <- function(fns) {
  g <- globalenv()
  needs <- function(f) is.function(f) && !is.primitive(f) &&
    identical(environment(f), g)
  if (!any(vapply(fns, needs, logical(1)))) return(fns)
  captured <- new.env(parent = g)
  seen <- character()
  visit <- function(f) {
    nms <- unique(c(all.names(body(f)),
                    unlist(lapply(formals(f), function(a)
                      if (is.language(a)) all.names(a)))))
    for (nm in setdiff(nms, seen)) {
      seen <<- c(seen, nm)
      if (!exists(nm, envir = g, inherits = FALSE)) next
      obj <- get(nm, envir = g, inherits = FALSE)
      if (needs(obj)) {
        environment(obj) <- captured
        visit(obj)
      }
      assign(nm, obj, envir = captured)
    }
  }
  lapply(fns, function(f) {
    if (!needs(f)) return(f)
    visit(f)
    environment(f) <- captured
    f
  })
}

# Save the tools' functions for the tool server, mode 0600.
write_tool_state <- function(tools, session_id, audit_log) {
  dir <- private_dir()
  base <- file.path(dir, session_id)
  state_file <- paste0(base, ".rds")
  budget_file <- paste0(base, ".budget")
  old <- Sys.umask("077")
  on.exit(Sys.umask(old))
  writeLines("0 -1", budget_file)
  Sys.chmod(budget_file, "0600", use_umask = FALSE)
  state <- list(
    version = 1L,
    session_id = session_id,
    tools = portable_functions(lapply(tools, function(t) t$fn)),
    wd = getwd(),
    audit_log = audit_log,
    budget_file = budget_file
  )
  tmp <- paste0(state_file, ".tmp")
  saveRDS(state, tmp)
  Sys.chmod(tmp, "0600", use_umask = FALSE)
  file.rename(tmp, state_file)
  list(state_file = state_file, budget_file = budget_file)
}

# The tool server's address space (the definition's "memory": docs/tools.md).
tool_memory_bytes <- function() {
  m <- getOption("securerfs.tool_memory", 4 * 2^30)
  if (!is.numeric(m) || length(m) != 1L || is.na(m) || m < 64 * 2^20)
    stop("option securerfs.tool_memory must be a number of bytes, at least 64 MiB",
         call. = FALSE)
  floor(m)
}

# The JSON definition of one tool for sessions/N/tools/NAME.json.
tool_definition <- function(tool, state_file) {
  rscript <- file.path(R.home("bin"), "Rscript")
  def <- list(
    description = tool$description,
    args = if (length(tool$args)) tool$args else
      structure(list(), names = character()),
    command = c(rscript, "--vanilla", tool_server_script(), state_file),
    mode = "server",
    timeout = as.numeric(getOption("securerfs.tool_timeout", 60)),
    memory = tool_memory_bytes(),
    env = list(R_LIBS = paste(.libPaths(), collapse = ":"))
  )
  as.character(jsonlite::toJSON(def, auto_unbox = TRUE, null = "null"))
}
