# The client's escapes (round 3, finding 7; R/escape.R): what reaches a
# terminal is escaped as the mount escapes its text files; the exact text
# stays where a program asks for it.

escape_text <- getFromNamespace("escape_text", "securerfs")

test_that("escape_text escapes C0 (but newline and tab), DEL and C1 as the mount does", {
  expect_identical(escape_text("\033]0;PWNED\007\033[2J"),
                   "\\x1b]0;PWNED\\x07\\x1b[2J")
  expect_identical(escape_text("a\tb\nc\rd\001\177"), "a\tb\nc\\x0dd\\x01\\x7f")
  expect_identical(escape_text("\u009b2J\u009d0;x\u009c"), "\\u009b2J\\u009d0;x\\u009c")
  # Printable text, including other non-ASCII, is left as it is.
  plain <- c("mean = 5", "na\u00efve \u00e9t\u00e9 \u20ac \U0001F600", "a\\x1b stays")
  expect_identical(escape_text(plain), plain)
  expect_identical(Encoding(escape_text(paste0("\u00e9", "\033"))), "UTF-8")
  # Attributes and NA are kept; not a character vector: unchanged.
  x <- c(a = "\033", b = NA)
  expect_identical(escape_text(x), c(a = "\\x1b", b = NA))
  expect_identical(escape_text(5L), 5L)
  expect_identical(escape_text(character()), character())
})

test_that("escape_text writes bytes that are not UTF-8 as \\xHH", {
  bad <- rawToChar(as.raw(c(0x61, 0xff, 0xc2, 0x9b, 0xc3, 0xa9, 0xe2, 0x82, 0x1b)))
  expect_false(validUTF8(bad))
  out <- escape_text(bad)
  expect_true(validUTF8(out))
  expect_identical(out, "a\\xff\\u009b\u00e9\\xe2\\x82\\x1b")
})

test_that("errors and printed lines from a run reach R escaped; result.json is exact", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  e <- tryCatch(s$execute('stop(paste0("\\033]0;PWNED\\007\\033[2J", "\\u009b31m"))'),
                error = function(e) e)
  expect_s3_class(e, "securerfs_runtime_error")
  msg <- conditionMessage(e)
  expect_false(any(charToRaw(msg) %in% as.raw(c(0x07, 0x1b))))
  expect_match(msg, "\\x1b]0;PWNED\\x07\\x1b[2J\\u009b31m", fixed = TRUE)
  # The exact text, for a program: the condition's $result.
  expect_match(e$result$error, paste0("\033]0;PWNED\007\033[2J", "\u009b31m"),
               fixed = TRUE)
  v <- s$execute('cat("\\033]52;c;cHduZWQ=\\007\\n", "\\u009b2J\\n", sep = ""); "\\033[31m"')
  expect_identical(attr(v, "output"), c("\\x1b]52;c;cHduZWQ=\\x07", "\\u009b2J"))
  # The value itself is exact (print() shows it escaped).
  expect_identical(as.vector(v), "\033[31m")
  res <- jsonlite::fromJSON(file.path(s$path(), "result.json"))
  expect_identical(res$console, paste0("\033]52;c;cHduZWQ=\007\n", "\u009b2J\n"))
  # A syntax error's message (the code's own text) is escaped too.
  e <- tryCatch(s$execute('x <- "\\033[2J" +'), error = function(e) e)
  expect_s3_class(e, "securerfs_syntax_error")
})
