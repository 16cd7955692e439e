# Host tools through a real mount: the package's tool process.

make_db <- function() {
  db <- tempfile(fileext = ".db")
  con <- DBI::dbConnect(RSQLite::SQLite(), db)
  on.exit(DBI::dbDisconnect(con))
  DBI::dbWriteTable(con, "sales", data.frame(
    id = 1:20, month = rep(c("jan", "feb"), 10),
    price = seq(1.5, 20.5, by = 1), quantity = 20:1))
  DBI::dbWriteTable(con, "customers", data.frame(
    id = 1:3, name = c("Ann", "Bob", NA)))
  db
}

test_that("a tool runs on the host and returns a value", {
  skip_if_no_tools()
  tools <- list(securer_tool("add", "Add numbers",
                             fn = function(a, b) a + b,
                             args = list(a = "numeric", b = "numeric")))
  s <- SecureSession$new(tools = tools)
  on.exit(s$close())
  expect_true(file.exists(file.path(s$path(), "tools", "add.json")))
  expect_identical(s$tools(), list(add = list(name = "add",
                                              args = list(a = "numeric",
                                                          b = "numeric"))))
  expect_equal(s$execute("add(2, 3)"), 5)
  expect_equal(s$execute("add(a = 10, b = 0.5) * 2"), 21)
  expect_match(format(s), "tools=1")
})

test_that("type mismatches and tool errors are R errors in the session", {
  skip_if_no_tools()
  tools <- list(
    securer_tool("add", "Add numbers", fn = function(a, b) a + b,
                 args = list(a = "numeric", b = "numeric")),
    securer_tool("fail", "Fails", fn = function() stop("the tool failed")))
  s <- SecureSession$new(tools = tools)
  on.exit(s$close())
  expect_error(s$execute("add('one', 2)"), "numeric|type",
               class = "securerfs_runtime_error")
  expect_error(s$execute("fail()"), "the tool failed",
               class = "securerfs_runtime_error")
  expect_identical(s$execute("tryCatch(fail(), error = function(e) 'caught')"),
                   "caught")
  expect_equal(s$execute("add(1, 1)"), 2)
})

test_that("tools see data frames, lists and NA with jsonlite's conventions", {
  skip_if_no_tools()
  tools <- list(
    securer_tool("describe", "Describe a data frame",
                 fn = function(df) list(rows = nrow(df), cols = names(df),
                                        classes = vapply(df, class, "")),
                 args = list(df = "data.frame")),
    securer_tool("echo", "Echo anything", fn = function(x) x,
                 args = list(x = "")))
  s <- SecureSession$new(tools = tools)
  on.exit(s$close())
  r <- s$execute("describe(data.frame(a = 1:3, b = c('x', NA, 'z')))")
  expect_identical(r$rows, 3L)
  expect_identical(r$cols, c("a", "b"))
  expect_identical(s$execute("is.data.frame(echo(head(mtcars, 2)))"), TRUE)
  expect_identical(s$execute("echo(c(1.5, NA))"), c(1.5, NA))
  expect_identical(s$execute("echo(list(a = 'x', b = TRUE))"),
                   list(a = "x", b = TRUE))
})

test_that("max_tool_calls is enforced", {
  skip_if_no_tools()
  n <- 0
  tools <- list(securer_tool("tick", "Count", fn = function() 1))
  s <- SecureSession$new(tools = tools)
  on.exit(s$close())
  expect_identical(s$execute("tick() + tick()", max_tool_calls = 2), 2L)
  expect_error(s$execute("tick(); tick(); tick()", max_tool_calls = 2),
               "Maximum tool calls \\(2\\) exceeded")
  # even when the code catches the refusal
  expect_error(s$execute(
    "for (i in 1:5) try(tick(), silent = TRUE); 'done'", max_tool_calls = 1),
    "Maximum tool calls \\(1\\) exceeded", class = "securerfs_blocked")
  expect_identical(s$execute("tick() + tick() + tick()"), 3L)
  expect_error(s$execute("1", max_tool_calls = -1), "max_tool_calls")
})

test_that("the tool process ends with the session", {
  skip_if_no_tools()
  s <- SecureSession$new(tools = list(securer_tool("pid", "pid",
                                                   fn = function() Sys.getpid())))
  pid <- s$execute("pid()")
  expect_true(is.numeric(pid) && pid != Sys.getpid())
  expect_true(file.exists(file.path("/proc", pid)))
  s$close()
  deadline <- Sys.time() + 10
  while (file.exists(file.path("/proc", pid)) && Sys.time() < deadline) {
    Sys.sleep(0.05)
  }
  gone <- !file.exists(file.path("/proc", pid)) ||
    grepl("^Z", sub("^.*\\) ", "",
                    tryCatch(readLines(file.path("/proc", pid, "stat")),
                             error = function(e) "Z")))
  expect_true(gone)
})

test_that("tool calls are in the client's audit log", {
  skip_if_no_tools()
  log <- tempfile(fileext = ".jsonl")
  s <- SecureSession$new(audit_log = log, tools = list(
    securer_tool("add", "Add", fn = function(a, b) a + b,
                 args = list(a = "numeric", b = "numeric"))))
  s$execute("add(1, 2)")
  s$close()
  ev <- lapply(readLines(log), jsonlite::fromJSON)
  calls <- Filter(function(e) e$event == "tool_call", ev)
  expect_length(calls, 1)
  expect_identical(calls[[1]]$tool, "add")
  expect_match(calls[[1]]$args, '"a":1')
})

test_that("the seed's database tools work through DBI and RSQLite", {
  skip_if_no_tools()
  skip_if_not_installed("DBI")
  skip_if_not_installed("RSQLite")
  dir <- tempfile("seed-db-")
  dir.create(dir)
  old <- setwd(dir)
  on.exit(setwd(old), add = TRUE)
  file.copy(make_db(), "data.db")
  # The seed's tools (helper-securerfs.R): "data.db" is relative to the
  # working directory, which the tool process shares.
  tools <- seed_db_tools()
  session <- SecureSession$new(tools = tools, sandbox = TRUE)
  on.exit(session$close(), add = TRUE)
  setwd(old)  # the tool process keeps the directory of the session's start
  expect_identical(session$execute("list_tables()"), c("customers", "sales"))
  first <- session$execute(
    "res <- lapply(list_tables(), function(t) query_db(t, 5)); names(res) <- list_tables(); res")
  expect_identical(nrow(first$sales), 5L)
  expect_identical(first$customers$name, c("Ann", "Bob", NA))
  expect_equal(first$sales$price, c(1.5, 2.5, 3.5, 4.5, 5.5))
  # state across calls, computing on the tool's data in the sandbox
  session$execute("sales <- query_db('sales', 100)")
  totals <- session$execute(
    "aggregate(price * quantity ~ month, data = sales, FUN = sum)")
  expect_s3_class(totals, "data.frame")
  expect_identical(sort(totals$month), c("feb", "jan"))
  # the sandbox itself cannot read the host's database
  expect_error(session$execute(sprintf("file.exists(%s) || stop('no file')",
                                       deparse(file.path(dir, "data.db")))),
               "no file")
  expect_error(session$execute("query_db('no_such_table', 1)"),
               "no such table")
})
