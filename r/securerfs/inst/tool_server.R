# securerfs tool server: runs the R functions of securer_tool() objects on the
# host, for one session of a securerfs mount.
#
#   Rscript tool_server.R STATE_FILE
#
# Started by the securerfs daemon (mode "server" in the tool definitions the
# R client wrote into sessions/N/tools/).  Protocol: one JSON object a line
# on stdin, {"id","tool","args"}; one a line on stdout, {"id","value"} or
# {"id","error"}.  STATE_FILE was written by the R client with saveRDS(): the
# tools' functions, the working directory, the audit log and the budget file
# for max_tool_calls.  It must belong to this user and be writable by no one
# else; nothing that arrives on stdin is ever evaluated or unserialized:
# arguments are JSON data, passed to the function with do.call(quote = TRUE).

local({
  args <- commandArgs(trailingOnly = TRUE)
  fail <- function(...) {
    cat("securerfs tool server: ", ..., "\n", sep = "", file = stderr())
    quit(save = "no", status = 2)
  }
  if (length(args) != 1L) fail("usage: tool_server.R STATE_FILE")
  # json_simplify_cells(), json_simplify_budget(): next to this script.
  me <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  if (length(me) != 1L) fail("run me with Rscript")
  sys.source(file.path(dirname(me), "json_shape.R"), envir = environment())
  path <- args[[1]]
  info <- file.info(path, extra_cols = TRUE)
  if (is.na(info$size) || info$isdir) fail("no state file ", path)
  my_uid <- local({
    st <- tryCatch(readLines("/proc/self/status", warn = FALSE),
                   error = function(e) character())
    uid <- grep("^Uid:", st, value = TRUE)
    if (length(uid)) as.integer(strsplit(trimws(sub("^Uid:", "", uid)),
                                         "[[:space:]]+")[[1]][2])
    else NA_integer_ # effective uid
  })
  if (!is.na(info$uid) && !is.na(my_uid) && info$uid != my_uid)
    fail("state file ", path, " belongs to another user")
  if (bitwAnd(as.integer(info$mode), strtoi("022", 8L)) != 0L)
    fail("state file ", path, " is writable by others")
  state <- readRDS(path)
  if (!is.list(state) || !identical(state$version, 1L) ||
      !is.list(state$tools))
    fail("bad state file ", path)
  if (is.character(state$wd) && dir.exists(state$wd)) setwd(state$wd)

  to_json <- function(x) {
    jsonlite::toJSON(x, auto_unbox = TRUE, null = "null", na = "null",
                     digits = NA, dataframe = "rows")
  }
  audit <- function(event, ...) {
    if (!is.character(state$audit_log)) return(invisible())
    entry <- c(list(timestamp = format(Sys.time(), "%Y-%m-%dT%H:%M:%OS3Z",
                                       tz = "UTC"),
                    event = event, session_id = state$session_id),
               list(...))
    try(cat(to_json(entry), "\n", sep = "", file = state$audit_log,
            append = TRUE), silent = TRUE)
  }
  budget_token <- NULL
  budget_count <- 0L
  over_budget <- function() {
    b <- tryCatch(scan(state$budget_file, what = "", quiet = TRUE),
                  error = function(e) character())
    if (length(b) < 2L) return(NULL)
    if (!identical(b[[1]], budget_token)) {
      budget_token <<- b[[1]]
      budget_count <<- 0L
    }
    budget_count <<- budget_count + 1L
    max <- suppressWarnings(as.integer(b[[2]]))
    if (!is.na(max) && max >= 0L && budget_count > max)
      sprintf("Maximum tool calls (%d) exceeded", max)
    else NULL
  }
  call_tool <- function(req) {
    tool <- req$tool
    if (!is.character(tool) || length(tool) != 1L ||
        !tool %in% names(state$tools))
      return(list(error = paste0("Unknown tool: ", paste(tool, collapse = ""))))
    fn <- state$tools[[tool]]
    a <- req$args
    if (is.null(a)) a <- list()
    if (!is.list(a) || is.data.frame(a) ||
        (length(a) > 0L && (is.null(names(a)) || any(!nzchar(names(a))))))
      return(list(error = "Tool arguments must be a JSON object"))
    over <- over_budget()
    if (!is.null(over)) return(list(error = over))
    start <- Sys.time()
    value <- NULL
    printed <- character()
    res <- tryCatch({
      printed <- utils::capture.output(
        value <- withCallingHandlers(
          do.call(fn, a, quote = TRUE),
          warning = function(w) {
            cat("warning in tool ", tool, ": ", conditionMessage(w), "\n",
                sep = "", file = stderr())
            invokeRestart("muffleWarning")
          },
          message = function(m) {
            cat(conditionMessage(m), file = stderr())
            invokeRestart("muffleMessage")
          }))
      list(value = value)
    }, error = function(e) list(error = conditionMessage(e)))
    if (length(printed)) writeLines(printed, stderr())
    audit("tool_call", tool = tool,
          args = substr(as.character(to_json(a)), 1L, 1024L),
          error = res$error,
          elapsed_secs = as.numeric(difftime(Sys.time(), start,
                                             units = "secs")))
    res
  }

  input <- file("stdin", open = "r")
  out <- stdout()
  repeat {
    line <- readLines(input, n = 1L, warn = FALSE)
    if (length(line) == 0L) break
    if (!nzchar(line)) next
    # Arguments are simplified as jsonlite does (vectors, data frames),
    # unless that would take memory out of proportion to the line: then
    # the call is refused (inst/json_shape.R).
    req <- tryCatch(jsonlite::parse_json(line, simplifyVector = FALSE),
                    error = function(e) NULL)
    id <- if (is.list(req)) req$id else NULL
    budget <- json_simplify_budget(nchar(line, "bytes"))
    res <- if (!is.list(req) || is.null(names(req))) {
      list(error = "malformed request (not a JSON object)")
    } else if (json_simplify_cells(req, budget) > budget) {
      list(error = sprintf(paste(
        "Tool arguments refused: simplified as jsonlite does, their arrays",
        "of objects would make data frames of more than %.0f cells"), budget))
    } else {
      call_tool(jsonlite::fromJSON(line, simplifyVector = TRUE))
    }
    reply <- if (is.null(res$error)) {
      tryCatch(to_json(list(id = id, value = res$value)),
               error = function(e) to_json(list(
                 id = id,
                 error = paste0("the tool's result has no JSON form: ",
                                conditionMessage(e)))))
    } else {
      to_json(list(id = id, error = res$error))
    }
    cat(reply, "\n", sep = "", file = out)
    flush(out)
  }
  invisible()
})
