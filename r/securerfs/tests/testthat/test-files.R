# The session's workspace (sessions/N/files/, the code's /work): $upload(),
# $download(), $files(), and what the ellmer tool returns for plots.

png_ok <- function(path) {
  sig <- readBin(path, "raw", 24L)
  identical(sig[1:8], as.raw(c(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a))) &&
    identical(rawToChar(sig[13:16]), "IHDR")
}

test_that("upload is read by the code, download brings files back", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  src <- tempfile(fileext = ".csv")
  write.csv(data.frame(x = 1:4, y = c(2, 4, 6, 8)), src, row.names = FALSE)
  expect_identical(s$upload(src, "data.csv"), "data.csv")
  expect_identical(s$execute("d <- read.csv('data.csv'); sum(d$y)"), 20L)
  s$upload(src, "sub/dir/again.csv")
  expect_identical(s$execute("nrow(read.csv('sub/dir/again.csv'))"), 4L)

  s$execute("png('trend.png'); plot(1:10); dev.off(); write.csv(d * 2, 'out.csv', row.names = FALSE)")
  dest <- tempfile(fileext = ".png")
  expect_identical(s$download("trend.png", dest), dest)
  expect_true(png_ok(dest))
  out <- tempfile(fileext = ".csv")
  s$download("out.csv", out)
  expect_identical(read.csv(out)$y, c(4L, 8L, 12L, 16L))

  f <- s$files()
  expect_s3_class(f, "data.frame")
  expect_setequal(f$name, c("data.csv", "sub/dir/again.csv", "trend.png", "out.csv"))
  expect_true(all(f$size > 0))
  expect_s3_class(f$mtime, "POSIXct")
})

test_that("files survive restart; names are checked; links are refused", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  s$execute("writeLines('kept', 'k.txt')")
  s$restart()
  expect_identical(s$execute("readLines('k.txt')"), "kept")
  expect_error(s$upload(tempfile()), "existing file")
  src <- tempfile()
  writeLines("x", src)
  expect_error(s$upload(src, "../escape"), "relative path")
  expect_error(s$upload(src, "/abs"), "relative path")
  expect_error(s$download("nope.txt", tempfile()), "No file")
  # A link the code planted is never followed by a download.
  s$execute("file.symlink('/etc/passwd', 'pw')")
  dest <- tempfile()
  expect_error(s$download("pw", dest), "symbolic link")
  expect_false(file.exists(dest))
  expect_false("pw" %in% s$files()$name)
})

test_that("the ellmer tool names new plots (older ellmer) and describes files", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  fun <- getFromNamespace("securer_tool_function", "securerfs")(session = s)
  res <- getFromNamespace("tool_result_with_images", "securerfs")
  # No image: the text alone.
  expect_identical(fun("1 + 1"), "2")
  # With images but an ellmer that cannot return them: the text names them.
  r <- s$.__enclos_env__$private$execute_checked(
    "plot(1:3); png('b.jpg.png'); plot(1); dev.off(); writeLines('x', 'n.txt'); 7",
    30, TRUE, NULL, NULL, 100000L, NULL, text = TRUE)
  expect_setequal(unlist(r$result$files), c("Rplot001.png", "b.jpg.png", "n.txt"))
  txt <- res(s, r$output, r$result$files, images_supported = FALSE)
  expect_match(txt, "^7\n")
  expect_match(txt, "Rplot001.png")
  expect_match(txt, "b.jpg.png")
  expect_false(grepl("n.txt", txt, fixed = TRUE))
  imgs <- getFromNamespace("new_images", "securerfs")
  expect_identical(imgs(list("a.PNG", "b.jpeg", "c.jpg", "d.svg", "e.csv")),
                   c("a.PNG", "b.jpeg", "c.jpg"))
  desc <- getFromNamespace("tool_description", "securerfs")(s)
  expect_match(desc, "files are kept")
  expect_match(desc, "PNG")
  if (getFromNamespace("ellmer_tool_images", "securerfs")()) {
    v <- res(s, r$output, r$result$files)
    expect_true(length(v@value) >= 2L)
  }
})
