# The examples of the user's description (seed/ellmer-integration.md), with
# library(securer) replaced by library(securerfs), run end to end; the chat
# itself is replaced by calls of the tool function the model would call.

tool_fun <- getFromNamespace("securer_tool_function", "securerfs")

test_that("seed: data analysis assistant with load_csv on the host", {
  skip_if_no_tools()
  dir <- tempfile("seed-csv-")
  dir.create(dir)
  old <- setwd(dir)
  on.exit(setwd(old), add = TRUE)
  set.seed(1)
  sales <- data.frame(price = round(runif(50, 1, 100), 2))
  sales$quantity <- round(200 - sales$price + rnorm(50, sd = 5))
  sales$region <- rep(c("north", "south"), 25)
  write.csv(sales, "sales.csv", row.names = FALSE)

  tools <- list(
    securer_tool("load_csv", "Load a CSV file and return as data frame",
      fn = function(path) {
        if (!file.exists(path)) stop("File not found: ", path)
        read.csv(path)
      },
      args = list(path = "character")),

    securer_tool("save_plot", "Save the current plot to a PNG file",
      fn = function(filename) {
        dev.copy(png, filename, width = 800, height = 600)
        dev.off()
        paste("Plot saved to", filename)
      },
      args = list(filename = "character"))
  )
  execute <- tool_fun(tools = tools, timeout = 60,
                      limits = list(memory = 1024 * 1024 * 1024))
  session <- attr(execute, "session")
  expect_identical(names(session$tools()), c("load_csv", "save_plot"))

  # "Load sales.csv and show me a summary"
  out <- execute("sales <- load_csv('sales.csv'); summary(sales)")
  expect_type(out, "character")
  expect_match(out, "price")
  expect_match(out, "quantity")
  # "What's the correlation between price and quantity?" (state persists)
  r <- execute("round(cor(sales$price, sales$quantity), 4)")
  expect_identical(r, as.character(round(cor(sales$price, sales$quantity), 4)))
  # the value itself through the session
  got <- session$execute("sales")
  expect_equal(got, sales)
  # a missing file is an error the model sees
  r <- execute("load_csv('nope.csv')")
  expect_match(if (inherits(r, "securerfs_tool_error")) r$error else r@error,
               "File not found: nope.csv")
  # the sandbox cannot read the file itself
  r <- execute(sprintf("readLines(%s)", deparse(file.path(dir, "sales.csv"))))
  expect_false(is.character(r) && !is.object(r))
})

test_that("seed: the assistant's scatter plot lands in the workspace", {
  skip_if_no_tools()
  dir <- tempfile("seed-plot-")
  dir.create(dir)
  old <- setwd(dir)
  on.exit(setwd(old), add = TRUE)
  write.csv(data.frame(price = c(1, 2, 3, 4), quantity = c(9, 7, 4, 2)),
            "sales.csv", row.names = FALSE)
  tools <- list(
    securer_tool("load_csv", "Load a CSV file and return as data frame",
      fn = function(path) read.csv(path), args = list(path = "character")),
    securer_tool("save_plot", "Save the current plot to a PNG file",
      fn = function(filename) {
        dev.copy(png, filename, width = 800, height = 600)
        dev.off()
        paste("Plot saved to", filename)
      },
      args = list(filename = "character")))
  execute <- tool_fun(tools = tools, timeout = 60)
  session <- attr(execute, "session")
  # "Create a scatter plot of price vs quantity": the code draws in the
  # sandbox; the plot is a PNG in the session's workspace, named in (or,
  # with ellmer >= 0.4.0, attached to) the tool's result.
  out <- execute("sales <- load_csv('sales.csv'); plot(sales$price, sales$quantity); 'done'")
  text <- if (is.character(out)) out else out@value[[1]]@text
  expect_match(text, "Rplot001.png")
  out <- execute("png('scatter.png', 800, 600); plot(sales$price, sales$quantity); dev.off(); 'ok'")
  expect_true("scatter.png" %in% session$files()$name)
  dest <- file.path(dir, "scatter.png")
  session$download("scatter.png", dest)
  expect_identical(readBin(dest, "raw", 4L), as.raw(c(0x89, 0x50, 0x4e, 0x47)))
  # save_plot() runs on the host, where the sandbox's plot is not: the
  # model gets an error it can act on (then saves with png() as above).
  r <- execute("plot(1:3); save_plot('host.png')")
  expect_false(is.character(r))
  expect_false(file.exists(file.path(dir, "host.png")))
})

test_that("seed: query_db and list_tables through a pre-existing session", {
  skip_if_no_tools()
  skip_if_not_installed("RSQLite")
  dir <- tempfile("seed-db-")
  dir.create(dir)
  old <- setwd(dir)
  on.exit(setwd(old), add = TRUE)
  con <- DBI::dbConnect(RSQLite::SQLite(), "data.db")
  DBI::dbWriteTable(con, "sales", data.frame(
    month = rep(month.abb[1:6], each = 5), amount = seq(10, 300, by = 10)))
  DBI::dbWriteTable(con, "products", data.frame(id = 1:8,
                                                name = letters[1:8]))
  DBI::dbDisconnect(con)

  tools <- seed_db_tools()

  session <- suppressMessages(SecureSession$new(
    tools = tools,
    sandbox = TRUE,
    verbose = TRUE  # Log tool calls and execution timing
  ))
  on.exit(suppressMessages(session$close()), add = TRUE)
  f <- tool_fun(session = session, timeout = 30)
  execute <- function(code) suppressMessages(f(code))
  # "What tables are available? Show me the first 5 rows of each."
  expect_match(execute("list_tables()"), "^\\[1\\] \"products\" \"sales\" *$")
  out <- execute("for (t in list_tables()) print(query_db(t, 5)); 'shown'")
  expect_identical(out, "shown")
  five <- suppressMessages(
    session$execute("lapply(list_tables(), query_db, limit = 5)"))
  expect_identical(vapply(five, nrow, 0L), c(5L, 5L))
  # "Analyze the sales table and compute monthly totals."
  suppressMessages(session$execute(
    "sales <- query_db('sales', 1000); totals <- tapply(sales$amount, sales$month, sum)"))
  # "Now plot the trend." -- same session, state persists
  out <- execute("png(tempfile()); plot(totals); invisible(dev.off()); sum(totals)")
  expect_identical(out, "4650")
  # type mismatch: a string where a number is expected
  r <- execute("query_db('sales', 'five')")
  expect_match(if (inherits(r, "securerfs_tool_error")) r$error else r@error,
               "must be numeric")
  expect_true(session$is_alive())
})

test_that("seed: error scenarios come back to the model", {
  skip_if_no_mount()
  execute <- tool_fun(sandbox = TRUE, timeout = 1)
  msg <- function(r) if (inherits(r, "securerfs_tool_error")) r$error else
    if (is.character(r)) NA_character_ else r@error
  # "Divide 1 by 0 and tell me what happens in R"
  expect_identical(execute("1 / 0"), "Inf")
  expect_match(msg(execute("mean(")), "syntax error")          # syntax
  expect_match(msg(execute("stop('oops')")), "oops")            # runtime
  expect_match(msg(execute("undefined_thing")), "not found")    # runtime
  expect_match(msg(execute("repeat {}")), "timed out")          # timeout
  expect_identical(execute("'recovered'"), "recovered")
  attr(execute, "session")$close()                              # dead session
  expect_match(msg(execute("1")), "no longer running")
})

test_that("seed: session pooling for raw code execution", {
  skip_if_no_tools()
  tools <- list(securer_tool("list_tables", "List tables",
                             fn = function() c("a", "b"), args = list()))
  pool <- SecureSessionPool$new(size = 2, tools = tools, sandbox = TRUE)
  on.exit(pool$close())
  handle_user_code <- function(code) {
    pool$execute(code, timeout = 30)
  }
  expect_identical(handle_user_code("length(list_tables())"), 2L)
  expect_identical(handle_user_code("sum(1:100)"), 5050L)
  # "create a separate SecureSession per request; cleaned up on GC"
  handle_user_chat <- function(code) {
    execute <- tool_fun(tools = tools, sandbox = TRUE, timeout = 30)
    execute(code)
  }
  expect_identical(handle_user_chat("paste(list_tables(), collapse = '+')"),
                   "a+b")
})
