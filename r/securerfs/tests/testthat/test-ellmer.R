# The execute_r_code tool: its function is tested without ellmer; the
# ellmer object itself only when ellmer is installed.

tool_fun <- getFromNamespace("securer_tool_function", "securerfs")

is_tool_error <- function(x) {
  inherits(x, "securerfs_tool_error") ||
    (isS4(x) || inherits(x, "S7_object")) && !is.null(tryCatch(
      x@error, error = function(e) NULL))
}
tool_error_message <- function(x) {
  if (inherits(x, "securerfs_tool_error")) x$error else x@error
}
# r is a tool error whose message matches pattern.
expect_tool_error <- function(r, pattern) {
  expect_true(is_tool_error(r))
  expect_match(tool_error_message(r), pattern)
}

# The tool function on a session of its own (attr(f, "session")), opened
# for the calling test and closed when that test ends.
tool_on_new_session <- function(timeout, envir = parent.frame()) {
  s <- SecureSession$new()
  # on.exit() of the caller's frame (this testthat has no defer()).
  do.call(on.exit, list(bquote(.(s)$close()), add = TRUE), envir = envir)
  tool_fun(session = s, timeout = timeout)
}

# f gives each element of values for its name (R code), called in order.
expect_tool_values <- function(f, values) {
  for (code in names(values)) expect_identical(f(code), values[[code]])
}

test_that("the tool function returns the formatted value as text", {
  skip_if_no_mount()
  f <- tool_on_new_session(timeout = 10)
  expect_tool_values(f, c("1 + 1" = "2", "NULL" = "NULL", "c(1, 2, 3)" = "[1] 1 2 3",
                          "x <- 42" = "42",
                          "x" = "42"))    # state persists across calls
  big <- f("data.frame(a = 1:100)")
  expect_match(big, "\\.\\.\\. \\(100 rows total\\)$")
  expect_lte(length(strsplit(big, "\n")[[1]]), 32L)
  long <- f("as.list(1:100)")
  expect_match(long, "\\.\\.\\. \\(output truncated\\)$")
})

test_that("every failure comes back as a tool error", {
  skip_if_no_mount()
  f <- tool_on_new_session(timeout = 1)
  expect_tool_error(f("x <- "), "syntax error")
  expect_tool_error(f("stop('test error')"), "test error")
  expect_tool_error(f("Sys.sleep(10)"), "timed out after 1 second")
  expect_tool_error(f("dyn.load(list.files(c('/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/lib'), pattern = '^libc[.]so[.]6$', full.names = TRUE)[1]); .C('abort')"), "crashed|killed")
  expect_identical(f("'still usable'"), "still usable")
  r <- f(NA_character_)
  expect_true(is_tool_error(r))
  attr(f, "session")$close()
  expect_tool_error(f("1"), "no longer running")
})

test_that("a tool called with the wrong type is a tool error", {
  skip_if_no_tools()
  tools <- list(securer_tool("query_db", "Query",
                             fn = function(table, limit) head(mtcars, limit),
                             args = list(table = "character",
                                         limit = "numeric")))
  f <- tool_fun(tools = tools, timeout = 10)
  expect_tool_error(f("query_db('mtcars', 'five')"), "numeric")
  expect_match(f("nrow(query_db('mtcars', 5))"), "^5$")
})

test_that("a session the tool creates is closed when the tool is collected", {
  skip_if_no_mount()
  f <- tool_fun(limits = list(cpu = 10), timeout = 5)
  dir <- attr(f, "session")$path()
  expect_identical(f("1"), "1")
  expect_true(dir.exists(dir))
  rm(f)
  invisible(gc())
  invisible(gc())
  expect_false(dir.exists(dir))
  # a session passed in is left to its owner
  s <- SecureSession$new()
  on.exit(s$close())
  g <- tool_fun(session = s)
  rm(g)
  invisible(gc())
  expect_true(s$is_alive())
  expect_error(tool_fun(session = "no"), "SecureSession")
})

test_that("tool errors without ellmer are plain objects", {
  te <- getFromNamespace("tool_error", "securerfs")
  e <- te("boom")
  expect_true(is_tool_error(e))
  expect_identical(tool_error_message(e), "boom")
})

test_that("as_ellmer_tool builds an ellmer tool (or says ellmer is needed)", {
  skip_if_no_mount()
  if (!requireNamespace("ellmer", quietly = TRUE) ||
      utils::packageVersion("ellmer") < "0.3.0") {
    # ellmer is not installed (it is not in Debian): the error says so.
    expect_error(as_ellmer_tool(), "ellmer")
    expect_error(securer_as_ellmer_tool(), "ellmer")
    return(invisible())
  }
  tool <- as_ellmer_tool(timeout = 10)
  expect_identical(tool@name, "execute_r_code")
  expect_match(tool@description, "Execute R code")
  expect_identical(tool(code = "1 + 1"), "2")
  r <- tool(code = "stop('test error')")
  expect_true(inherits(r, "ellmer::ContentToolResult"))
  expect_match(r@error, "test error")
  s <- SecureSession$new()
  on.exit(s$close())
  t2 <- securer_as_ellmer_tool(session = s)
  expect_identical(t2@name, "execute_r_code")
  expect_identical(t2(code = "x <- 1; x + 1"), "2")
})
