# The R-level formatter and JSON converter of the worker
# (sandbox/worker/worker.R), the code the worker runs for every value its C
# fast path does not cover.
#
#   Rscript tests/unit/test_format.R sandbox/worker/worker.R
#
# Prints "format: N passed, N failed" and exits non-zero on any failure.

args <- commandArgs(trailingOnly = TRUE)
src <- if (length(args)) args[1L] else "sandbox/worker/worker.R"

# As the worker does: a private environment whose parent is the base
# namespace, not attached.
w <- new.env(parent = .BaseNamespaceEnv)
exprs <- parse(src, keep.source = FALSE)
for (e in exprs) eval(e, w)

passed <- 0L
failed <- 0L
check <- function(what, ok) {
    if (isTRUE(ok)) {
        passed <<- passed + 1L
    } else {
        failed <<- failed + 1L
        cat("FAIL:", what, "\n")
    }
}
lines_of <- function(s) strsplit(s, "\n", fixed = TRUE)[[1L]]
json <- function(x) w$value_json(x)
# The JSON text, parsed back, for comparisons that do not depend on spacing.
json_value <- function(x) jsonlite::fromJSON(json(x)[1L], simplifyVector = FALSE)

# NULL
check("NULL text", identical(w$format_value(NULL), "NULL"))
check("NULL json", identical(json(NULL), c("null", NA)))

# Length-one atomics: as.character()
check("42 text", identical(w$format_value(42), "42"))
check("42 json", identical(json(42), c("42", NA)))
check("'a' text", identical(w$format_value("a"), "a"))
check("'a' json", identical(json("a"), c("\"a\"", NA)))
check("TRUE text", identical(w$format_value(TRUE), "TRUE"))
check("TRUE json", identical(json(TRUE), c("true", NA)))
check("NA text", identical(w$format_value(NA), "NA"))
check("NA json", identical(json(NA), c("null", NA)))
check("NA_character_ text", identical(w$format_value(NA_character_), "NA"))
check("1/3 text", identical(w$format_value(1 / 3), "0.333333333333333"))
check("1/3 json", identical(json(1 / 3), c("0.333333333333333", NA)))
check("Inf json", identical(json(c(1, Inf, NaN, NA)), c("[1,null,null,null]", NA)))

# Classed length-one atomics still go through as.character()
check("factor text", identical(w$format_value(factor("lvl")), "lvl"))
check("factor json", identical(json(factor("lvl")), c("\"lvl\"", NA)))
d <- as.Date("2024-03-05")
check("Date text", identical(w$format_value(d), "2024-03-05"))
check("Date json", identical(json(d), c("\"2024-03-05\"", NA)))

# Long vectors: 50 lines of print() and a marker
out <- lines_of(w$format_value(1:1000))
check("1:1000 has 51 lines", length(out) == 51L)
check("1:1000 ends with the marker", identical(out[51L], "... (output truncated)"))
check("1:1000 starts like print()", identical(out[1L], utils::capture.output(print(1:1000))[1L]))
check("1:1000 json", identical(length(json_value(1:1000)), 1000L))
out <- lines_of(w$format_value(1:10))
check("1:10 one line, no marker", length(out) == 1L)

# Data frames: header + 30 rows, then the row count
df <- data.frame(a = 1:100, b = rep(c("x", "y"), 50))
out <- lines_of(w$format_value(df))
check("100-row data frame has 32 lines", length(out) == 32L)
check("100-row data frame marker", identical(out[32L], "... (100 rows total)"))
check("100-row data frame prints head(30)",
      identical(out[1:31], utils::capture.output(print(utils::head(df, 30)))))
j <- json_value(df)
check("data frame json is rows", length(j) == 100L && identical(j[[1L]], list(a = 1L, b = "x")))
small <- data.frame(a = 1:5, b = letters[1:5])
out <- lines_of(w$format_value(small))
check("5-row data frame has 6 lines", length(out) == 6L)
check("5-row data frame has no marker", !any(grepl("rows total", out, fixed = TRUE)))

# Lists
l <- list(a = 1, b = "x")
check("list text", identical(w$format_value(l), "$a\n[1] 1\n\n$b\n[1] \"x\""))
check("list json", identical(json(l), c("{\"a\":1,\"b\":\"x\"}", NA)))

# No JSON form: null with a note
f <- function(x) x + 1
check("function text", identical(w$format_value(f), paste(utils::capture.output(print(f)), collapse = "\n")))
jf <- json(f)
check("function json is NA", is.na(jf[1L]))
check("function json has a note", is.character(jf[2L]) && !is.na(jf[2L]) && nzchar(jf[2L]))
check("environment json is NA", is.na(json(new.env())[1L]))

# A print method that fails gives a placeholder, not an error
bad <- structure(list(), class = "srfs_bad")
registerS3method("print", "srfs_bad", function(x, ...) stop("no printing"), envir = globalenv())
check("failing print gives placeholder", grepl("could not be printed", w$format_value(bad), fixed = TRUE))

# The line budget: empty lines past line 50 are dropped as trailing blanks
# unless text follows them; a data frame wider than 50 lines gets both markers
emit <- function(text) structure(list(text), class = "srfs_emit")
registerS3method("print", "srfs_emit", function(x, ...) cat(x[[1L]]), envir = globalenv())
fifty <- paste0("l", 1:50, "\n", collapse = "")
out <- lines_of(w$format_value(emit(paste0(fifty, "\n\n\n"))))
check("50 lines and blank ones: no marker", identical(out, paste0("l", 1:50)))
out <- lines_of(w$format_value(emit(paste0(fifty, "\n\nl53\n"))))
check("text after blank ones past 50: marker",
      identical(out, c(paste0("l", 1:50), "... (output truncated)")))
out <- lines_of(w$format_value(emit(paste0(paste0("l", 1:45, "\n", collapse = ""), "\n\n\n\n\n\nx"))))
check("blank lines before the cut are kept",
      identical(out, c(paste0("l", 1:45), rep("", 5), "... (output truncated)")))
out <- lines_of(w$format_value(emit("no newline at the end")))
check("a last line without newline", identical(out, "no newline at the end"))
wide <- as.data.frame(matrix(1:4000, 40, 100))
out <- lines_of(w$format_value(wide))
check("wide data frame: 50 lines and both markers",
      length(out) == 52L && identical(out[51:52], c("... (output truncated)", "... (40 rows total)")))
check("wide data frame starts like print(head())",
      identical(out[1:50], utils::capture.output(print(utils::head(wide, 30)))[1:50]))

# No trailing newline
check("no trailing newline", !grepl("\n$", w$format_value(list(1))))

# Warnings as R's top level words them
check("one warning block", identical(w$warning_block(NA_character_, "w1", 1L), "Warning message:\nw1\n"))
check("warning with call", identical(w$warning_block("f()", "boom", 1L), "Warning message:\nIn f() : boom\n"))
check("two warnings block",
      identical(w$warning_block(c("f()", NA), c("a", "b"), 2L), "Warning messages:\n1: In f() : a\n2: b\n"))

# Syntax errors keep R's line:column
check("parse error message", grepl("^Syntax error: <text>:1:3: unexpected symbol", w$parse_error("x y")))

cat(sprintf("format: %d passed, %d failed\n", passed, failed))
quit(status = if (failed == 0L) 0L else 1L)
