# R side of the securerfs worker.
#
# The worker (sandbox/worker/r_embed.c) evaluates this file once, in the
# zygote, into a private environment whose parent is the base namespace: base
# functions come first, so user code that redefines `paste` or `length` in the
# global environment cannot break the formatter, while S3 methods the user
# defines there are still found by print().  tests/unit/test_format.R sources
# this same file and checks the same functions.
#
# C calls only the functions below, through calls it builds once at start-up:
#   format_value(x)      the text for `output` (DESIGN section 2)
#   value_json(x)        c(json, note): jsonlite's JSON text, or NA and a reason
#   parse_error(code)    R's own message for code R_ParseVector refused
#   warning_summary()    the warnings of the run: c(console block, entries...)
#   reset_warnings()     forget them
# and reads the variables warnings_count, interrupted and tool_error directly.
# It sets capture_start_native, capture_stop_native (capture.c) and
# tool_call_native (tool_bridge.c) to its own routines.

max_output_lines <- 50L
max_df_rows <- 30L
max_warnings <- 50L
max_json_bytes <- 4 * 1024 * 1024

# Warnings of the current run: at most max_warnings entries, each as R's
# top level would word it ("In f() : msg" or "msg"); the call and message
# parts are kept for the console block.  The worker resets them (no R call on
# the fast path) when warnings_count is not 0.
warnings_text <- character()
warnings_call <- character()
warnings_msg <- character()
warnings_count <- 0L

# The calling handler the worker (run.c) installs around every run through
# .Internal(.addCondHands(...)), so that no R closure frame lies between the
# global environment and the user's code (errors then read "Error: boom", not
# "Error in eval(...) : boom").  It records the warning and muffles it, as
# R's top level would print it only at the end of the run.
warning_handler <- function(w) {
    warnings_count <<- warnings_count + 1L
    if (warnings_count <= max_warnings) {
        msg <- tryCatch(conditionMessage(w), error = function(e) "(unprintable warning)")
        call <- tryCatch(conditionCall(w), error = function(e) NULL)
        dcall <- if (is.null(call)) NA_character_ else
            tryCatch(deparse(call, nlines = 1L)[1L], error = function(e) NA_character_)
        warnings_call <<- c(warnings_call, dcall)
        warnings_msg <<- c(warnings_msg, msg)
        warnings_text <<- c(warnings_text,
                            if (is.na(dcall)) msg else paste0("In ", dcall, " : ", msg))
    }
    invokeRestart("muffleWarning")
}

# Set when an interrupt (SIGINT from the daemon, SIGXCPU) reaches the top of
# the run.  R's own SIGINT handler for blocking waits (Sys.sleep) unwinds
# without passing through the worker's signal handler, so the condition is
# the one sure sign.  A handler the user's code established nearer catches
# it first, as it would at R's prompt.
interrupted <- FALSE
interrupt_handler <- function(cond) interrupted <<- TRUE

# Whether the error that ended the run came from a tool call (result's
# error_kind "tool"): tool_invoke() raises the tool's error, and a call with
# arguments of the wrong type, as a condition of class securerfs_tool_error.
# This outermost calling handler runs only for an error no handler of the
# user's code caught (an exiting handler nearer the error, tryCatch(), takes
# it first and the run goes on), so the last error it sees is the one that
# ends the run; the worker resets it at the start of each run.
tool_error <- FALSE
error_handler <- function(cond) tool_error <<- inherits(cond, "securerfs_tool_error")

# The call the worker evaluates in the global environment at the start of
# each run: exactly what withCallingHandlers() does, minus its frame.
add_handlers_call <- as.call(list(
    quote(.Internal),
    as.call(list(quote(.addCondHands), c("warning", "interrupt", "error"),
                 list(warning_handler, interrupt_handler, error_handler),
                 globalenv(), NULL, TRUE))))

# Forget the warnings of the last run (the worker calls it only when there
# were some, and after warning_summary()).
reset_warnings <- function() {
    warnings_text <<- character()
    warnings_call <<- character()
    warnings_msg <<- character()
    warnings_count <<- 0L
}

# Width of the first line of a message, as PrintWarnings() measures it.
first_line_width <- function(msg) {
    nchar(strsplit(msg, "\n", fixed = TRUE)[[1L]][1L], type = "width", allowNA = TRUE)
}

# R's own top-level report (src/main/errors.c, PrintWarnings): one warning,
# up to ten numbered, or a count.  LONGWARN is 75 there.
warning_block <- function(calls, msgs, count) {
    one <- function(prefix_width, dcall, msg) {
        if (is.na(dcall)) return(msg)
        w <- first_line_width(msg)
        sep <- if (!is.na(w) && prefix_width + nchar(dcall, type = "width") + w > 75L) "\n  " else " "
        paste0("In ", dcall, " :", sep, msg)
    }
    if (count == 1L)
        return(paste0("Warning message:\n", one(6L, calls[1L], msgs[1L]), "\n"))
    if (count <= 10L) {
        lines <- vapply(seq_along(msgs), function(i)
            paste0(i, ": ", one(10L, calls[i], msgs[i])), "")
        return(paste0("Warning messages:\n", paste(lines, collapse = "\n"), "\n"))
    }
    if (count < max_warnings)
        sprintf("There were %d warnings (use warnings() to see them)\n", count)
    else
        sprintf("There were %d or more warnings (use warnings() to see the first %d)\n",
                max_warnings, max_warnings)
}

warning_summary <- function() {
    # warnings() stays empty: R keeps last.warning in the locked base
    # environment, which only its C internals may write.
    c(warning_block(warnings_call, warnings_msg, warnings_count), warnings_text)
}

# print() of a list ends with an empty line; the daemon adds the final newline.
drop_trailing_blank <- function(lines) {
    n <- length(lines)
    while (n > 0L && !nzchar(lines[n])) n <- n - 1L
    lines[seq_len(n)]
}

# ---- print() within a line budget ---------------------------------------------
#
# In the worker, print()'s output never exists beyond what is kept.
# capture_start_native (capture.c) diverts what R writes to stdout into a
# buffer that counts lines; when a line past the budget gets its first
# character (or the text passes 1 MiB) it invokes the restart
# securerfs_output_full, which unwinds the printing wherever it is: in
# print.default's C code, in a print method, in S4 show(), in cat() inside
# either.  A restart is no condition: no tryCatch() or calling handler of a
# print method can catch it, and on.exit() code of the frames it leaves runs,
# as after an interrupt.  Empty lines past the budget are only counted: they
# would be dropped as trailing blanks, unless text follows.
#
# Outside the worker (tests/unit/test_format.R) capture.output() stands in:
# the same lines, without the bound.
capture_start_native <- NULL
capture_stop_native <- NULL

# list(lines, truncated): the first max_lines lines print(x) writes (empty
# lines past them left out), and whether it wrote more than that.
print_lines <- function(x, max_lines) {
    if (is.null(capture_start_native)) {
        lines <- utils::capture.output(print(x))
        if (length(drop_trailing_blank(lines)) > max_lines)
            return(list(lines[seq_len(max_lines)], TRUE))
        return(list(lines[seq_len(min(length(lines), max_lines))], FALSE))
    }
    # A sink() the code left open would take print()'s output: put the
    # console on top of the sink stack for the time of the printing
    # (connection 1: stdout() is whatever output is diverted to).
    n <- sink.number()
    if (n > 0L) {
        sink(getConnection(1L))
        if (sink.number() > n) on.exit(sink(), add = TRUE)
    }
    .Call(capture_start_native, max_lines)
    on.exit(.Call(capture_stop_native), add = TRUE) # also when print() fails
    withRestarts(print(x), securerfs_output_full = function() NULL)
    .Call(capture_stop_native)
}

# DESIGN section 2.  Never fails: a value whose printing fails gets a
# placeholder saying so.  An interrupt (the run's deadline) is no failure:
# it goes on to the worker (run.c), which ends the run "interrupted", and is
# recorded here as at the top of the run, since Sys.sleep() in a print method
# unwinds without passing through the worker's own signal handler.
format_value <- function(x) {
    withCallingHandlers(
        tryCatch(format_value_unsafe(x), error = function(e)
            paste0("<value could not be printed: ", conditionMessage(e), ">")),
        warning = function(w) invokeRestart("muffleWarning"),
        interrupt = interrupt_handler)
}

format_value_unsafe <- function(x) {
    if (is.null(x)) return("NULL")
    if (is.atomic(x) && length(x) == 1L) {
        s <- as.character(x)
        if (is.character(s) && length(s) == 1L)
            return(if (is.na(s)) "NA" else s)
    }
    if (is.data.frame(x)) {
        # head() first: print.data.frame formats every row it is given.
        n <- nrow(x)
        out <- print_lines(utils::head(x, max_df_rows), max_output_lines)
        lines <- out[[1L]]
        if (out[[2L]]) lines <- c(lines, "... (output truncated)")
        if (n > max_df_rows) lines <- c(lines, sprintf("... (%d rows total)", n))
    } else {
        out <- print_lines(x, max_output_lines)
        lines <- if (out[[2L]]) c(out[[1L]], "... (output truncated)")
                 else drop_trailing_blank(out[[1L]])
    }
    paste(lines, collapse = "\n")
}

# The value as JSON text by jsonlite's conventions, or NA with the reason it
# has none: c(json, note).
value_json <- function(x) {
    kind <- typeof(x)
    if (is.function(x))
        return(c(NA_character_, "a function has no JSON form"))
    if (kind %in% c("environment", "externalptr", "weakref", "bytecode",
                    "promise", "char", "...", "any", "S4"))
        return(c(NA_character_, sprintf("a value of type %s has no JSON form", kind)))
    res <- withCallingHandlers(tryCatch(
        jsonlite::toJSON(x, auto_unbox = TRUE, na = "null", digits = NA,
                         null = "null", dataframe = "rows"),
        error = function(e) e), warning = function(w) invokeRestart("muffleWarning"))
    if (inherits(res, "error"))
        return(c(NA_character_, paste0("no JSON form: ", conditionMessage(res))))
    json <- as.character(res)
    if (length(json) != 1L || is.na(json))
        return(c(NA_character_, "no JSON form"))
    if (nchar(json, type = "bytes") > max_json_bytes)
        return(c(NA_character_, sprintf("value JSON over %d MiB", max_json_bytes %/% 1048576)))
    c(json, NA_character_)
}

# R's message for code the C parser refused, with its <text>:line:column.
parse_error <- function(code) {
    msg <- tryCatch({
        parse(text = code, keep.source = FALSE)
        "unknown parse error"
    }, error = function(e) conditionMessage(e))
    paste0("Syntax error: ", msg)
}

# ---- Tools (docs/tools.md) --------------------------------------------------
#
# The worker (tool_bridge.c) calls define_tool() and remove_tool() between
# runs, when the daemon sends define_tool/remove_tool frames.  Each tool is a
# function with the declared formal arguments, bound (locked) in the
# environment attached to the search path as "securerfs:tools", made when the
# first tool comes.  Its body calls tool_invoke(), which checks the argument
# types, sends the call through tool_call_native (set by tool_bridge.c: sends
# a tool_call frame and waits for the reply) and turns the reply into an R
# value or error, of class securerfs_tool_error (run.c reports it as
# error_kind "tool").  The daemon checks every call again: nothing here is a
# security boundary.

tool_call_native <- NULL
tools_search_name <- "securerfs:tools"

tools_env <- function(create = TRUE) {
    if (tools_search_name %in% search())
        return(as.environment(tools_search_name))
    if (!create) return(NULL)
    # attach() is the only way to put a new environment on the search path.
    get("attach", baseenv())(NULL, pos = 2L, name = tools_search_name,
                             warn.conflicts = FALSE)
}

tool_type_ok <- function(x, type) {
    switch(type,
           character = is.character(x),
           numeric = is.numeric(x),
           integer = is.numeric(x) && all(is.na(x) | (is.finite(x) & x == trunc(x))),
           logical = is.logical(x),
           list = is.list(x),
           data.frame = is.data.frame(x),
           TRUE)
}

tool_condition <- function(message, call, class = character()) {
    structure(class = c(class, "securerfs_tool_error", "error", "condition"),
              list(message = message, call = call))
}

# The JSON jsonlite gives the arguments (a length-one vector unboxed, NA and
# NULL as null, data frames as an array of rows); {} when there are none.
tool_args_json <- function(args) {
    if (!length(args)) return("{}")
    as.character(jsonlite::toJSON(args, auto_unbox = TRUE, null = "null", na = "null",
                                  digits = NA, dataframe = "rows"))
}

tool_invoke <- function(name, types, args, call) {
    for (i in seq_along(types)) {
        if (!tool_type_ok(args[[i]], types[[i]])) {
            got <- if (is.null(args[[i]])) "NULL" else class(args[[i]])[1L]
            stop(tool_condition(sprintf("argument \"%s\" must be %s, not %s",
                                        names(types)[i], types[[i]], got),
                                call, "securerfs_tool_argument_error"))
        }
    }
    reply <- .Call(tool_call_native, name, args)
    if (is.null(reply))
        reply <- .Call(tool_call_native, name, tool_args_json(args))
    switch(reply[[1L]] + 1L,
           reply[[2L]],
           jsonlite::fromJSON(reply[[2L]], simplifyVector = TRUE),
           stop(tool_condition(reply[[2L]], call)))
}

define_tool <- function(name, argnames, argtypes, description) {
    env <- tools_env()
    types <- as.list(argtypes)
    names(types) <- argnames
    f <- function() NULL
    fmls <- rep(list(quote(expr = )), length(argnames))
    names(fmls) <- argnames
    formals(f) <- fmls
    # list(a = a, b = b): forcing a missing argument gives R's own error.
    arglist <- as.call(c(list(list), lapply(argnames, as.name)))
    names(arglist) <- c("", argnames)
    # The helpers are inlined (not looked up by name), so that neither an
    # argument nor a user's global variable can stand in for them.
    body(f) <- as.call(list(tool_invoke, name, types, arglist, as.call(list(sys.call))))
    environment(f) <- baseenv()
    attr(f, "description") <- description
    if (exists(name, envir = env, inherits = FALSE))
        unlockBinding(name, env)
    assign(name, f, envir = env)
    lockBinding(name, env)
    invisible(NULL)
}

remove_tool <- function(name) {
    env <- tools_env(create = FALSE)
    if (!is.null(env) && exists(name, envir = env, inherits = FALSE)) {
        unlockBinding(name, env)
        rm(list = name, envir = env)
    }
    invisible(NULL)
}

# ---- A session's state (state.c; docs/protocol.md, "The state stream") ----
#
# snapshot_state() is list(blob, notes, packages): blob the global
# environment's bindings (all of them, .Random.seed included) with the
# attached packages, as R's own serialize() writes them; notes, by name,
# what cannot be carried: a binding that holds an external pointer or a weak
# reference (a connection, a database handle: serialize would write a null
# pointer in its place) or that fails to serialize.  Those are left out,
# never carried half-dead.  The happy path serializes once; only when the
# refhook saw something does it go binding by binding to name them.
#
# code: the bindings whose value is code yet to run (an active binding, a
# promise not forced: state.c finds them without running them), which mget()
# would run here, between runs, outside a run's limits; left out by name.
snapshot_state <- function(code = character()) {
    env <- globalenv()
    nms <- setdiff(ls(env, all.names = TRUE, sorted = TRUE), code)
    seen <- character()
    hook <- function(x) {
        t <- typeof(x)
        if (t == "externalptr" || t == "weakref") seen <<- c(seen, t)
        NULL
    }
    pkgs <- sub("^package:", "", grep("^package:", search(), value = TRUE))
    vals <- mget(nms, envir = env)
    notes <- sprintf("%s: not carried (an active binding or a promise not yet forced: its code would run outside any run)",
                     code)
    make <- function(vals) list(format = "securerfs-state", version = 1L, globals = vals,
                                packages = pkgs, notes = notes)
    blob <- tryCatch(serialize(make(vals), NULL, xdr = FALSE, refhook = hook),
                     error = function(e) NULL)
    if (is.null(blob) || length(seen)) {
        keep <- list()
        for (n in nms) {
            seen <- character()
            ok <- tryCatch({
                serialize(vals[[n]], NULL, xdr = FALSE, refhook = hook)
                TRUE
            }, error = function(e) conditionMessage(e))
            if (!isTRUE(ok))
                notes <- c(notes, sprintf("%s: not carried (it could not be serialized: %s)", n, ok))
            else if (length(seen))
                notes <- c(notes, sprintf(
                    "%s: not carried (it holds an %s: a connection, a database handle or other native resource)",
                    n, if ("externalptr" %in% seen) "external pointer" else "weak reference"))
            else
                keep[n] <- list(vals[[n]])
        }
        seen <- character()
        blob <- serialize(make(keep), NULL, xdr = FALSE)
    }
    list(blob, notes, pkgs)
}

raw_alloc <- function(n) raw(n)

# The inverse, in the session restored into, in two steps so that a restore
# that fails changes nothing (docs/security.md, "Round 4", finding 9):
# read_state() reads the whole state and checks that it can go in, before
# anything changes (an error leaves the session as it was); state.c then
# stages the files and swaps them in, and only then commit_state() makes the
# old bindings go, attaches the packages the copy lacks in the original's
# order, and lets the bindings come in.  It returns the notes: the
# original's and what failed here.
state_shape_ok <- function(state) {
    is.list(state) && identical(state$format, "securerfs-state") &&
        identical(state$version, 1L) && is.list(state$globals) &&
        (!length(state$globals) || (!is.null(names(state$globals)) &&
                                    all(nzchar(names(state$globals))))) &&
        is.character(state$packages) && is.character(state$notes)
}

# In a child process of the worker, for a state read from a file: does R
# read it without dying?  (The parent then reads it for real.)
check_state <- function(blob) state_shape_ok(unserialize(blob))

read_state <- function(blob) {
    state <- unserialize(blob)
    if (!state_shape_ok(state))
        stop("not a securerfs state")
    # The session's code may have locked the global environment
    # (lockEnvironment): commit_state() could not empty it.  Locked bindings
    # are no obstacle: rm() removes them.
    if (environmentIsLocked(globalenv()))
        stop("the global environment is locked")
    state
}

commit_state <- function(state) {
    notes <- state$notes
    env <- globalenv()
    rm(list = ls(env, all.names = TRUE), envir = env)
    have <- sub("^package:", "", grep("^package:", search(), value = TRUE))
    for (p in rev(state$packages)) {
        if (p %in% have) next
        ok <- tryCatch({
            suppressPackageStartupMessages(library(p, character.only = TRUE))
            TRUE
        }, error = function(e) conditionMessage(e))
        if (!isTRUE(ok))
            notes <- c(notes, sprintf("package %s: not attached (%s)", p, ok))
    }
    list2env(state$globals, envir = env)
    as.character(notes)
}
