test_that("a pool runs code and reports its sessions", {
  skip_if_no_mount()
  pool <- SecureSessionPool$new(size = 2)
  on.exit(pool$close())
  expect_identical(pool$size(), 2L)
  expect_identical(pool$available(), 2L)
  expect_identical(pool$status(), list(total = 2L, busy = 0L, idle = 2L,
                                       dead = 0L))
  expect_identical(pool$execute("1 + 1"), 2L)
  expect_identical(pool$execute("x <- 3; x * 2", timeout = 5), 6L)
  expect_error(pool$execute("stop('pool error')"), "pool error")
  expect_identical(pool$available(), 2L)     # given back after an error
  expect_match(format(pool), "size=2 idle=2 busy=0")
  expect_output(print(pool), "SecureSessionPool")
  expect_error(SecureSessionPool$new(size = 0), "at least 1")
  expect_error(SecureSessionPool$new(size = 101), "must not exceed 100")
})

test_that("dead sessions are replaced", {
  skip_if_no_mount()
  pool <- SecureSessionPool$new(size = 1)
  on.exit(pool$close())
  s <- pool$.__enclos_env__$private$sessions[[1]]
  s$close()
  expect_identical(pool$status()$dead, 1L)
  expect_identical(pool$execute("40 + 2"), 42L)
  expect_identical(pool$status()$dead, 0L)
  expect_false(identical(pool$.__enclos_env__$private$sessions[[1]], s))
})

test_that("a busy pool waits acquire_timeout, then errors", {
  skip_if_no_mount()
  pool <- SecureSessionPool$new(size = 1)
  on.exit(pool$close())
  priv <- pool$.__enclos_env__$private
  priv$busy[[1]] <- TRUE
  expect_identical(pool$available(), 0L)
  t0 <- Sys.time()
  expect_error(pool$execute("1", acquire_timeout = 0.3),
               "All sessions are busy")
  expect_gte(as.numeric(difftime(Sys.time(), t0, units = "secs")), 0.3)
  priv$busy[[1]] <- FALSE
  expect_identical(pool$execute("1", acquire_timeout = 0.3), 1L)
})

test_that("reset_between_uses clears the state", {
  skip_if_no_mount()
  keep <- SecureSessionPool$new(size = 1, reset_between_uses = FALSE)
  on.exit(keep$close())
  keep$execute("v <- 1")
  expect_true(keep$execute("exists('v')"))
  reset <- SecureSessionPool$new(size = 1, reset_between_uses = TRUE)
  on.exit(reset$close(), add = TRUE)
  reset$execute("v <- 1")
  expect_false(reset$execute("exists('v')"))
})

test_that("a pool with tools and limits; a closed pool", {
  skip_if_no_tools()
  tools <- list(securer_tool("double_it", "Double", fn = function(x) 2 * x,
                             args = list(x = "numeric")))
  pool <- SecureSessionPool$new(size = 2, tools = tools,
                                limits = list(memory = 256 * 1024^2))
  expect_equal(pool$execute("double_it(21)"), 42)
  pool$close()
  expect_identical(pool$available(), 0L)
  expect_identical(pool$status()$total, 0L)
  expect_match(format(pool), "closed")
  expect_error(pool$execute("1"), "Pool is closed")
})
