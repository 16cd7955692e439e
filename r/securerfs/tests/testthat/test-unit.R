# Tests that need no mount.

test_that("validate_code finds syntax errors and risky calls", {
  ok <- validate_code("x <- 1; mean(x)")
  expect_true(ok$valid)
  expect_null(ok$error)
  expect_identical(ok$warnings, character())
  bad <- validate_code("x <- ")
  expect_false(bad$valid)
  expect_match(bad$error, "unexpected end of input")
  w <- validate_code("system('ls'); .Call('x'); processx::run('ls')")
  expect_true(w$valid)
  expect_length(w$warnings, 3)
  expect_match(w$warnings[1], "system")
  expect_length(validate_code("mysystem(1)")$warnings, 0)
  expect_error(validate_code(c("a", "b")), "single character string")
  expect_error(validate_code(1), "single character string")
})

test_that("default_limits has securer's values", {
  l <- default_limits()
  expect_named(l, c("cpu", "memory", "fsize", "nproc", "nofile"))
  expect_equal(l$cpu, 60)
  expect_equal(l$memory, 512 * 1024^2)
  expect_equal(l$fsize, 50 * 1024^2)
  expect_equal(l$nproc, 50)
  expect_equal(l$nofile, 256)
})

test_that("securer_tool checks its arguments and prints", {
  t <- securer_tool("add", "Add numbers", fn = function(a, b) a + b,
                    args = list(a = "numeric", b = "numeric"))
  expect_s3_class(t, "securer_tool")
  expect_identical(t$name, "add")
  expect_identical(t$args, list(a = "numeric", b = "numeric"))
  expect_output(print(t), "Name: add")
  expect_match(format(t), "a \\(numeric\\), b \\(numeric\\)")
  t0 <- securer_tool("now", "Time", fn = function() Sys.time())
  expect_length(t0$args, 0)
  expect_match(format(t0), "Args: none")
  expect_identical(securer_tool("f", "d", function(x) x,
                                args = list(x = "any"))$args, list(x = ""))
  expect_error(securer_tool("", "d", identity), "non-empty")
  expect_error(securer_tool("bad name", "d", identity), "valid R identifier")
  expect_error(securer_tool("f", 1, identity), "description")
  expect_error(securer_tool("f", "d", "notfn"), "must be a function")
  expect_error(securer_tool("f", "d", identity, args = "x"), "must be a list")
  expect_error(securer_tool("f", "d", identity, args = list(x = "float")),
               "types must be one of")
  expect_error(securer_tool("f", "d", identity, args = list("character")),
               "named list")
  expect_error(securer_tool("f", "d", identity,
                            args = list(`a b` = "character")),
               "valid R identifiers")
})

test_that("tools are validated as a list", {
  vt <- getFromNamespace("validate_tools", "securerfs")
  t <- securer_tool("f", "d", identity, args = list(x = ""))
  expect_named(vt(list(t)), "f")
  expect_error(vt(list(t, t)), "Duplicate tool names")
  expect_error(vt(list(identity)), "securer_tool")
  expect_identical(vt(list()), list())
})

test_that("limits are checked and turned into the limits file's JSON", {
  lj <- getFromNamespace("limits_json", "securerfs")
  vl <- getFromNamespace("validate_limits", "securerfs")
  expect_null(lj(NULL, TRUE))
  expect_identical(jsonlite::fromJSON(lj(NULL, FALSE)),
                   list(cpu = NULL, memory = NULL, fsize = NULL,
                        nproc = NULL, nofile = NULL, stack = NULL))
  expect_equal(jsonlite::fromJSON(lj(list(memory = 1024^3), TRUE)),
               list(memory = 1024^3))
  expect_true("cpu" %in% names(jsonlite::fromJSON(lj(list(cpu = Inf), TRUE))))
  expect_error(vl(list(bogus = 1)), "Unknown limit")
  expect_error(vl(list(cpu = -1)), "single positive number")
  expect_error(vl(list(cpu = "a")), "single positive number")
  expect_silent(vl(default_limits()))
})

test_that("sanitize_error_message strips paths, hosts and pids", {
  san <- getFromNamespace("sanitize_error_message", "securerfs")
  expect_identical(san("cannot open file '/home/alice/secret.csv': No such"),
                   "cannot open file '[path]': No such")
  expect_match(san("cannot connect to 10.0.0.5:5432"), "\\[host\\]")
  expect_match(san("could not resolve host db.internal.example.com"),
               "\\[host\\]")
  expect_match(san("process 12345 died"), "\\[pid\\]")
  expect_identical(san("1/2/3 is fine"), "1/2/3 is fine")
  expect_identical(nchar(san(strrep("a", 1000))), 500L)
  expect_identical(san(NULL), "Unknown error")
})

test_that("a missing securerfs program gives an error saying what to do", {
  fb <- getFromNamespace("find_securerfs_bin", "securerfs")
  old <- options(securerfs.bin = "/nonexistent/securerfs")
  on.exit(options(old))
  expect_error(fb(), "securerfs not found.*SECURERFS_BIN",
               class = "securerfs_mount_error")
})

test_that("a bad mount directory is an error", {
  expect_error(securerfs_mount(mount = tempdir()), "no securerfs mount",
               class = "securerfs_mount_error")
})

test_that("the tool server speaks the server protocol", {
  ns <- asNamespace("securerfs")
  db <- tempfile(fileext = ".txt")
  writeLines(c("a", "b"), db)
  tools <- ns$validate_tools(list(
    securer_tool("read_it", "Read", fn = function(n) readLines(db)[seq_len(n)],
                 args = list(n = "numeric")),
    securer_tool("df", "A data frame", fn = function() {
      cat("printed output must not reach the protocol\n")
      data.frame(x = c(1.5, NA), y = c("a", NA))
    }),
    securer_tool("fail", "Fails", fn = function() stop("tool failed")),
    securer_tool("fn_value", "Unrepresentable", fn = function() environment())
  ))
  st <- ns$write_tool_state(tools, "unit-test", NULL)
  expect_identical(file.info(st$state_file)$mode, as.octmode("600"))
  def <- jsonlite::fromJSON(ns$tool_definition(tools$read_it, st$state_file))
  expect_identical(def$mode, "server")
  expect_identical(def$args, list(n = "numeric"))
  expect_identical(def$command[4], st$state_file)
  expect_true(file.exists(def$command[1]))
  def0 <- ns$tool_definition(tools$df, st$state_file)
  expect_match(def0, '"args":\\{\\}')
  writeLines("1 2", st$budget_file)
  input <- tempfile()
  writeLines(c('{"id":1,"tool":"read_it","args":{"n":2}}',
               '{"id":"two","tool":"df","args":{}}',
               '{"id":3,"tool":"fail","args":{}}',
               '{"id":4,"tool":"fn_value","args":{}}',
               '{"id":5,"tool":"nope","args":{}}',
               'not json'), input)
  res <- processx::run(def$command[1], def$command[-1], stdin = input,
                       env = c(PATH = "/usr/bin:/bin", LANG = "C.UTF-8",
                               R_LIBS = def$env$R_LIBS),
                       error_on_status = FALSE)
  expect_identical(res$status, 0L)
  out <- lapply(strsplit(res$stdout, "\n")[[1]], jsonlite::fromJSON)
  expect_length(out, 6)
  expect_identical(out[[1]], list(id = 1L, value = c("a", "b")))
  expect_identical(out[[2]]$id, "two")
  expect_identical(out[[2]]$value,
                   data.frame(x = c(1.5, NA), y = c("a", NA)))
  expect_match(res$stderr, "printed output")
  # the budget (max_tool_calls = 2) refuses the third call of the run
  expect_identical(out[[3]]$error, "Maximum tool calls (2) exceeded")
  writeLines("2 -1", st$budget_file)
  res <- processx::run(def$command[1], def$command[-1], stdin = input,
                       env = c(PATH = "/usr/bin:/bin", LANG = "C.UTF-8",
                               R_LIBS = def$env$R_LIBS),
                       error_on_status = FALSE)
  out <- lapply(strsplit(res$stdout, "\n")[[1]], jsonlite::fromJSON)
  expect_identical(out[[3]], list(id = 3L, error = "tool failed"))
  expect_match(out[[4]]$error, "no JSON form")
  expect_identical(out[[5]]$error, "Unknown tool: nope")
  expect_null(out[[6]]$id)
  expect_match(out[[6]]$error, "malformed")
})

test_that("the tool server refuses a state file others can write", {
  ns <- asNamespace("securerfs")
  tools <- ns$validate_tools(list(securer_tool("f", "d", function() 1)))
  st <- ns$write_tool_state(tools, "unit-test-2", NULL)
  Sys.chmod(st$state_file, "0666", use_umask = FALSE)
  res <- processx::run(file.path(R.home("bin"), "Rscript"),
                       c("--vanilla", system.file("tool_server.R",
                                                  package = "securerfs"),
                         st$state_file),
                       stdin = NULL, error_on_status = FALSE)
  expect_identical(res$status, 2L)
  expect_match(res$stderr, "writable by others")
})

test_that("global functions carry the globals they use to the tool process", {
  pf <- getFromNamespace("portable_functions", "securerfs")
  g <- globalenv()
  assign(".securerfs_test_value", 41, envir = g)
  assign(".securerfs_test_helper",
         eval(quote(function(x) x + .securerfs_test_value), g), envir = g)
  f <- eval(quote(function() .securerfs_test_helper(1)), g)
  on.exit(rm(list = c(".securerfs_test_value", ".securerfs_test_helper"),
             envir = g))
  p <- pf(list(f = f))$f
  expect_false(identical(environment(p), g))
  p2 <- unserialize(serialize(p, NULL))
  rm(list = c(".securerfs_test_value", ".securerfs_test_helper"), envir = g)
  on.exit()
  expect_identical(p2(), 42)
})

test_that("the C parse check never raises and agrees with parse()", {
  parses <- function(x) .Call(getFromNamespace("securerfs_parses", "securerfs"), x)
  by_parse <- function(x) {
    tryCatch({ parse(text = x, keep.source = FALSE); TRUE }, error = function(e) FALSE)
  }
  # Code on which R's parser raises an error rather than answering: each is
  # left to parse() (NA), never a raise out of the check.
  raising <- c(paste0(strrep("(", 60), "1", strrep(")", 60)),
               paste0("{", strrep("if (1) ", 100), "1}"),
               paste0("x[", strrep("a[", 60), "1", strrep("]", 61)),
               paste0("a", strrep("b", 9000)), "function(x, x) 1",
               "1 |> f(_)", "x => y", "r\"abc\"", "'\\q'", "'\\x'", "``",
               "1e5 ~ _", "#line 3 \"f\"\n1")
  for (x in raising) expect_identical(parses(x), NA, info = x)
  plain <- c("1+1", "x <- ", "", "f(a = 1)", ")", "'abc", "`a", "0x", "1.5",
             "if (TRUE) 1 else 2", "x[[1]]", "a::b", "my_var <- 2", "{",
             paste0(strrep("(", 30), "1", strrep(")", 30)))
  for (x in plain) expect_identical(parses(x), by_parse(x), info = x)
  expect_identical(parses("\u00e9 <- 1"), NA)
  expect_false(parses(c("a", "b")))
})

test_that("a result.json parses as parse_json() would parse it", {
  parse_result <- getFromNamespace("parse_result", "securerfs")
  texts <- c(
    '{"seq":1,"status":"ok","value":2,"output":"2","warnings":[],"files":[]}',
    '{"value":null,"output":"NULL","console":"a\\nb\\u00e9"}',
    '{"value":[1,2.5,null],"x":{"y":[true,false],"z":{}},"big":9007199254740993}',
    '{"value":"\\u2603 \\ud83d\\ude00","n":-1e300,"e":[[],[[]]]}',
    '[1,"a",null]', '"x"', "3", "null")
  for (t in texts) {
    expect_identical(parse_result(t), jsonlite::parse_json(t, simplifyVector = FALSE),
                     info = t)
  }
  expect_error(parse_result('{"seq":'))
})
