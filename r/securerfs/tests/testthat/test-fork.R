test_that("fork copies the global environment, packages, files and RNG state", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  s$execute("x <- 1:10; f <- function(n) n * 2; library(tools); set.seed(7)")
  s$execute("writeLines('hi', 'note.txt')")
  b <- s$fork()
  on.exit(b$close(), add = TRUE)
  expect_s3_class(b, "SecureSession")
  expect_false(identical(b$path(), s$path()))
  expect_identical(b$execute("sum(x)"), 55L)
  expect_identical(b$execute("f(21)"), 42L)  # whole numbers come back as integers
  expect_true(b$execute("'package:tools' %in% search()"))
  expect_identical(b$execute("readLines('note.txt')"), "hi")
  expect_identical(b$execute("runif(1)"), s$execute("runif(1)"))
  # Branches do not cross.
  b$execute("x <- 0")
  expect_identical(s$execute("sum(x)"), 55L)
})

test_that("what a fork cannot carry is named in restore_notes", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  s$execute("con <- file(tempfile(), 'w'); keep <- 'yes'")
  b <- s$fork()
  on.exit(b$close(), add = TRUE)
  v <- b$execute("keep")
  expect_identical(as.vector(v), "yes")
  expect_match(attr(v, "restore_notes"), "^con: not carried", all = FALSE)
  expect_null(attr(b$execute("1"), "restore_notes"))
})

test_that("a fork keeps the session's tools, with their own state", {
  skip_if_no_tools()
  tools <- list(securer_tool("add", "Add", fn = function(a, b) a + b,
                             args = list(a = "numeric", b = "numeric")))
  s <- SecureSession$new(tools = tools)
  on.exit(s$close())
  b <- s$fork()
  s$close()
  on.exit(b$close(), add = TRUE)
  expect_identical(b$execute("add(2, 3)"), 5L)
})
