test_that("execute_r runs once and closes its session", {
  skip_if_no_mount()
  before <- stats_of()$sessions
  expect_identical(execute_r("sum(1:10)"), 55L)
  v <- execute_r("cat('hi\\n'); 1", timeout = 5, limits = list(cpu = 5),
                 verbose = FALSE, validate = TRUE)
  expect_identical(attr(v, "output"), "hi")
  expect_error(execute_r("x <- "), class = "securerfs_syntax_error")
  expect_error(execute_r("Sys.sleep(5)", timeout = 0.5),
               class = "securerfs_timeout")
  log <- tempfile()
  execute_r("1", audit_log = log)
  expect_true(file.exists(log))
  expect_identical(stats_of()$sessions, before)
})

test_that("execute_r takes tools", {
  skip_if_no_tools()
  tools <- list(securer_tool("greet", "Greet", fn = function(who)
    paste("hello", who), args = list(who = "character")))
  expect_identical(execute_r("greet('world')", tools = tools), "hello world")
})

test_that("with_secure_session closes the session, also on error", {
  skip_if_no_mount()
  kept <- NULL
  r <- with_secure_session(function(s) {
    kept <<- s
    s$execute("x <- 2")
    s$execute("x * 21")
  })
  expect_identical(r, 42L)
  expect_false(kept$is_alive())
  expect_error(with_secure_session(function(s) {
    kept <<- s
    stop("inside")
  }), "inside")
  expect_false(kept$is_alive())
  r <- with_secure_session(function(s) s$execute("1"), limits = list(cpu = 3),
                           verbose = FALSE)
  expect_identical(r, 1L)
  expect_error(with_secure_session("no"), "must be a function")
})
