test_that("execute returns values rebuilt from value.json", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  expect_identical(s$execute("1 + 1"), 2L)
  expect_identical(s$execute("0.5 * 3"), 1.5)
  expect_identical(s$execute("'hello'"), "hello")
  expect_identical(s$execute("c(TRUE, FALSE, NA)"), c(TRUE, FALSE, NA))
  expect_identical(s$execute("c(1.5, NA, 3.25)"), c(1.5, NA, 3.25))
  expect_identical(s$execute("c('a', NA)"), c("a", NA))
  expect_null(s$execute("NULL"))
  expect_identical(s$execute("NA"), NA)
  expect_identical(s$execute("x <- 5"), 5L)   # invisible values too
  expect_identical(s$execute("list(a = 1.5, b = 'x', c = list(d = TRUE))"),
                   list(a = 1.5, b = "x", c = list(d = TRUE)))
  df <- s$execute(paste0(
    "data.frame(i = 1:3, d = c(1.5, NA, 3.25), s = c('x', 'y', NA), ",
    "l = c(TRUE, NA, FALSE), stringsAsFactors = FALSE)"))
  expect_s3_class(df, "data.frame")
  expect_identical(df, data.frame(i = 1:3, d = c(1.5, NA, 3.25),
                                  s = c("x", "y", NA),
                                  l = c(TRUE, NA, FALSE)))
  expect_identical(vapply(df, typeof, ""),
                   c(i = "integer", d = "double", s = "character",
                     l = "logical"))
  mt <- s$execute("head(mtcars, 3)")
  expect_identical(dim(mt), c(3L, 11L))
  expect_equal(mt$mpg, head(mtcars$mpg, 3))
  f <- s$execute("function(x) x")
  expect_match(f, "function \\(x\\)")
  expect_match(attr(f, "value_note"), "no JSON form")
})

test_that("printed lines are in the output attribute", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  v <- s$execute("cat('a\\nb\\n'); print(1:2); message('m'); 42")
  expect_identical(as.vector(v), 42L)
  expect_identical(attr(v, "output"), c("a", "b", "[1] 1 2", "m"))
  expect_null(attr(s$execute("3"), "output"))
  v <- s$execute("for (i in 1:10) cat(i, '\\n'); 1", max_output_lines = 3)
  expect_identical(attr(v, "output"), c("1 ", "2 ", "3 "))
})

test_that("state persists across calls, restart clears it", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  s$execute("x <- 1:10")
  expect_identical(s$execute("sum(x)"), 55L)
  expect_identical(s$restart(), s)
  expect_true(s$is_alive())
  expect_false(s$execute("exists('x')"))
})

test_that("errors are R errors with classes", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  e <- expect_error(s$execute("stop('boom')"), "boom",
                    class = "securerfs_runtime_error")
  expect_s3_class(e, "securerfs_error")
  expect_identical(conditionMessage(e), "boom")
  expect_identical(e$result$status, "error")
  expect_error(s$execute("undefined_variable_xyz"), "not found",
               class = "securerfs_runtime_error")
  expect_error(s$execute("log(-1); sqrt('a')"),
               "non-numeric argument", class = "securerfs_runtime_error")
  # the session survives errors
  expect_identical(s$execute("1"), 1L)
})

test_that("syntax errors are found in R before the mount sees the code", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  s$execute("1")
  seq_before <- jsonlite::fromJSON(file.path(s$path(), "result.json"))$seq
  e <- expect_error(s$execute("x <- "), "syntax error and was not executed",
                    class = "securerfs_syntax_error")
  expect_match(conditionMessage(e), "unexpected end of input")
  expect_identical(
    jsonlite::fromJSON(file.path(s$path(), "result.json"))$seq, seq_before)
  expect_error(s$execute("x <- ", validate = FALSE), "Syntax error",
               class = "securerfs_syntax_error")
  expect_identical(
    jsonlite::fromJSON(file.path(s$path(), "result.json"))$seq,
    seq_before + 1L)
})

test_that("the kind of an error comes from the daemon, not from its text", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  # An R error whose message looks like a parse error is a runtime error.
  e <- expect_error(s$execute("stop('Syntax error: not really')"),
                    class = "securerfs_runtime_error")
  expect_identical(e$result$error_kind, "runtime")
  e <- expect_error(s$execute("x <- ", validate = FALSE),
                    class = "securerfs_syntax_error")
  expect_identical(e$result$error_kind, "syntax")
})

test_that("a timeout interrupts the run and keeps the state", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  t0 <- Sys.time()
  e <- expect_error(s$execute("y <- 7; Sys.sleep(10)", timeout = 1),
                    "timed out after 1 second", class = "securerfs_timeout")
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 5)
  expect_identical(e$result$status, "timeout")
  expect_identical(s$execute("y"), 7L)
  expect_identical(s$execute("Sys.sleep(1.2); 'slept'", timeout = NULL),
                   "slept")
  expect_identical(readLines(file.path(s$path(), "timeout")), "0")
  expect_error(s$execute("1", timeout = -1), "timeout")
})

test_that("a crashed worker is an error and the session goes on", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  s$execute("z <- 1")
  libc <- "dyn.load(list.files(c('/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib'), pattern = '^libc[.]so[.]6$', full.names = TRUE)[1]); .C('abort')"
  e <- expect_error(s$execute(libc), "state was lost",
                    class = "securerfs_crash")
  expect_true(e$result$status %in% c("crashed", "killed"))
  expect_true(s$is_alive())
  expect_false(s$execute("exists('z')"))
})

test_that("a closed session is dead", {
  skip_if_no_mount()
  s <- SecureSession$new()
  dir <- s$path()
  expect_true(dir.exists(dir))
  expect_true(s$is_alive())
  s$close()
  expect_false(dir.exists(dir))
  expect_false(s$is_alive())
  expect_error(s$execute("1"), "Session is not running",
               class = "securerfs_dead_session")
  expect_error(s$restart(), "Session is not running")
  expect_identical(s$close(), s)  # twice is fine
})

test_that("a session removed behind its back is dead", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  file.remove(s$path())
  expect_false(s$is_alive())
  expect_error(s$execute("1"), class = "securerfs_dead_session")
})

test_that("sessions are closed when garbage collected", {
  skip_if_no_mount()
  s <- SecureSession$new()
  dir <- s$path()
  rm(s)
  invisible(gc())
  expect_false(dir.exists(dir))
})

test_that("print, format and tools", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  expect_match(format(s), "<SecureSession> \\[running\\].*sandbox=enabled tools=0")
  expect_output(print(s), "Status: running")
  expect_identical(s$tools(), list())
  s$close()
  expect_match(s$format(), "\\[stopped\\]")
})

test_that("verbose reports start, runs and timing", {
  skip_if_no_mount()
  m <- capture_messages(s <- SecureSession$new(verbose = TRUE))
  expect_match(m, "\\[securerfs\\] Session .* started", all = FALSE)
  on.exit(s$close())
  m <- capture_messages(s$execute("1"))
  expect_match(m, "Executing code \\(1 chars\\)", all = FALSE)
  expect_match(m, "Execution complete \\([0-9.]+s, 0 tool calls\\)",
               all = FALSE)
  m <- capture_messages(try(s$execute("stop('x')"), silent = TRUE))
  expect_match(m, "Execution error: Error: x", all = FALSE)
  m <- capture_messages(try(s$execute("Sys.sleep(3)", timeout = 0.5),
                            silent = TRUE))
  expect_match(m, "timed out", all = FALSE)
  expect_message(s$restart(), "Restarting session")
  expect_message(s$close(), "Session closed")
  q <- SecureSession$new()
  on.exit(q$close(), add = TRUE)
  expect_silent(q$execute("1"))
})

test_that("audit_log writes JSON lines, mode 0600", {
  skip_if_no_mount()
  log <- tempfile(fileext = ".jsonl")
  s <- SecureSession$new(audit_log = log)
  s$execute("1 + 1")
  try(s$execute("stop('bad')"), silent = TRUE)
  try(s$execute("Sys.sleep(5)", timeout = 0.5), silent = TRUE)
  s$restart()
  s$close()
  expect_identical(file.info(log)$mode, as.octmode("600"))
  ev <- lapply(readLines(log), jsonlite::fromJSON)
  events <- vapply(ev, `[[`, "", "event")
  expect_identical(events, c("session_start", "execute_start",
                             "execute_complete", "execute_start",
                             "execute_error", "execute_start",
                             "execute_timeout", "session_restart",
                             "session_close"))
  expect_identical(ev[[2]]$code, "1 + 1")
  expect_match(ev[[5]]$error, "bad")
  expect_true(all(vapply(ev, function(e) !is.null(e$timestamp), TRUE)))
  expect_error(SecureSession$new(audit_log = "/dev/null"), "device")
})

test_that("max_executions limits the number of runs", {
  skip_if_no_mount()
  s <- SecureSession$new(max_executions = 2)
  on.exit(s$close())
  s$execute("1")
  s$execute("2")
  expect_error(s$execute("3"), "Maximum executions \\(2\\) reached",
               class = "securerfs_blocked")
  expect_error(SecureSession$new(max_executions = 0), "positive")
})

test_that("pre_execute_hook can block code", {
  skip_if_no_mount()
  seen <- character()
  s <- SecureSession$new(pre_execute_hook = function(code) {
    seen <<- c(seen, code)
    !grepl("forbidden", code)
  })
  on.exit(s$close())
  expect_identical(s$execute("1"), 1L)
  expect_error(s$execute("forbidden()"), "blocked by pre_execute_hook",
               class = "securerfs_blocked")
  expect_identical(seen, c("1", "forbidden()"))
  s2 <- SecureSession$new(pre_execute_hook = function(code) stop("hook broke"))
  on.exit(s2$close(), add = TRUE)
  expect_error(s2$execute("1"), "pre_execute_hook error: hook broke")
  expect_error(SecureSession$new(pre_execute_hook = "no"), "must be a function")
})

test_that("sanitize_errors strips paths from messages", {
  skip_if_no_mount()
  s <- SecureSession$new(sanitize_errors = TRUE)
  on.exit(s$close())
  e <- expect_error(s$execute("stop('cannot read /home/alice/secret.txt')"),
                    class = "securerfs_runtime_error")
  expect_identical(conditionMessage(e), "cannot read [path]")
  s2 <- SecureSession$new()
  on.exit(s2$close(), add = TRUE)
  expect_error(s2$execute("stop('cannot read /home/alice/secret.txt')"),
               "/home/alice/secret.txt", fixed = TRUE)
})

test_that("output_handler gets lines while the run goes on", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  got <- list()
  v <- s$execute(
    "for (i in 1:4) { cat('line', i, '\\n'); Sys.sleep(0.3) }; cat('tail'); 'done'",
    output_handler = function(line) got[[length(got) + 1L]] <<-
      list(line = line, time = Sys.time()))
  end <- Sys.time()
  lines <- vapply(got, `[[`, "", "line")
  expect_identical(lines, c("line 1 ", "line 2 ", "line 3 ", "line 4 ", "tail"))
  expect_identical(as.vector(v), "done")
  # the first line arrived well before the run ended
  expect_gt(as.numeric(difftime(end, got[[1]]$time, units = "secs")), 0.6)
  # errors in the handler are ignored; handler must be a function
  expect_identical(as.vector(s$execute("cat('x\\n'); 1",
                                       output_handler = function(l) stop("no"))),
                   1L)
  expect_error(s$execute("1", output_handler = "x"), "must be a function")
})

test_that("max_code_length refuses long code", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  expect_error(s$execute(strrep("1", 101), max_code_length = 100),
               "Code too long \\(101 chars, max 100\\)",
               class = "securerfs_blocked")
  expect_identical(s$execute(strrep("1", 5), max_code_length = 5), 11111L)
  expect_error(s$execute(paste0("x <- '", strrep("a", 100001), "'")),
               "Code too long")
})

test_that("limits are written to the session and enforced", {
  skip_if_no_mount()
  s <- SecureSession$new(limits = list(memory = 256 * 1024^2, cpu = 5))
  on.exit(s$close())
  l <- jsonlite::fromJSON(file.path(s$path(), "limits"))
  expect_equal(l$memory, 256 * 1024^2)
  expect_equal(l$cpu, 5)
  expect_error(s$execute("x <- numeric(1e9)"), "allocate|memory",
               class = "securerfs_error")
  expect_identical(s$execute("1"), 1L)
  d <- SecureSession$new()
  on.exit(d$close(), add = TRUE)
  l <- jsonlite::fromJSON(file.path(d$path(), "limits"))
  expect_equal(l[names(default_limits())], default_limits())
  n <- SecureSession$new(limits = list())
  on.exit(n$close(), add = TRUE)
  l <- jsonlite::fromJSON(file.path(n$path(), "limits"))
  expect_true(all(vapply(l, is.null, TRUE)))
  expect_error(SecureSession$new(limits = list(cpu = -1)), "positive")
  expect_error(SecureSession$new(limits = list(foo = 1)), "Unknown limit")
})

test_that("the mount comes from the argument, the option or the environment", {
  skip_if_no_mount()
  m <- securerfs_mount()
  expect_true(file.exists(file.path(m, "README")))
  s <- SecureSession$new(mount = m)
  on.exit(s$close())
  expect_identical(dirname(dirname(s$path())), normalizePath(m))
  old <- options(securerfs.mount = m)
  expect_identical(securerfs_mount(), normalizePath(m))
  options(old)
  old_env <- Sys.getenv("SECURERFS_MOUNT", unset = NA)
  Sys.setenv(SECURERFS_MOUNT = m)
  expect_identical(securerfs_mount(), normalizePath(m))
  if (is.na(old_env)) Sys.unsetenv("SECURERFS_MOUNT") else
    Sys.setenv(SECURERFS_MOUNT = old_env)
  expect_error(SecureSession$new(mount = tempdir()), "no securerfs mount")
})

test_that("sandbox = FALSE uses a mount without the jail", {
  skip_if_no_mount()
  skip_if(external_mount(), "SECURERFS_MOUNT is set")
  s <- SecureSession$new(sandbox = FALSE)
  on.exit(s$close())
  m <- dirname(dirname(s$path()))
  expect_identical(jsonlite::fromJSON(file.path(m, "config"))$sandbox, "none")
  expect_false(identical(m, securerfs_mount()))
  expect_match(format(s), "sandbox=disabled")
  expect_identical(s$execute("1 + 1"), 2L)
  # a strict mount given for sandbox = FALSE: warning
  strict <- securerfs_mount()
  expect_warning(s2 <- SecureSession$new(sandbox = FALSE, mount = strict),
                 "sandbox = FALSE is ignored")
  s2$close()
  # a mount without the jail given for sandbox = TRUE
  expect_warning(s3 <- SecureSession$new(mount = m), "without a sandbox")
  s3$close()
  expect_error(SecureSession$new(mount = m, sandbox_strict = TRUE),
               "sandbox_strict", class = "securerfs_sandbox_error")
})

test_that("code is a string; vectors are joined", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  expect_identical(s$execute(c("a <- 2", "a * 3")), 6L)
  expect_error(s$execute(1), "character string")
  expect_error(s$execute(NA_character_), "character string")
})
