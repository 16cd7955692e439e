# The ellmer tool's images (round 3, finding 6): only bytes that are PNG or
# JPEG reach ellmer and ImageMagick, and ImageMagick only through the named
# decoder.  ellmer and magick are not needed: image_content() takes their
# functions as arguments.

image_content <- getFromNamespace("image_content", "securerfs")
image_kind <- getFromNamespace("image_kind", "securerfs")

# A directory of R's session temporary directory (removed when R ends).
new_dir <- function() {
  d <- tempfile("images-")
  dir.create(d)
  d
}

write_png <- function(path) {
  grDevices::png(path, width = 200, height = 150)
  graphics::plot.new()
  grDevices::dev.off()
  path
}

recorder <- function() {
  calls <- new.env()
  calls$read <- character()
  calls$content <- list()
  calls
}

fake <- function(calls, has_magick) {
  function(path) {
    image_content(path, has_magick = has_magick,
                  read = function(spec) {
                    calls$read <- c(calls$read, spec)
                    sub("^[a-z]+:", "", spec)
                  },
                  scale = function(img) img,
                  write = function(img, to, format) file.copy(img, to),
                  content = function(...) {
                    calls$content[[length(calls$content) + 1L]] <- list(...)
                    "content"
                  })
  }
}

test_that("image_kind reads the signature, not the name", {
  dir <- new_dir()
  png <- write_png(file.path(dir, "a.png"))
  jpg <- file.path(dir, "b.jpg")
  writeBin(as.raw(c(0xff, 0xd8, 0xff, 0xe0, 0, 0x10)), jpg)
  mvg <- file.path(dir, "c.png")
  writeLines(c("push graphic-context", "image over 0,0 0,0 'text:/etc/passwd'",
               "pop graphic-context"), mvg)
  svg <- file.path(dir, "d.jpg")
  writeLines('<svg xmlns="http://www.w3.org/2000/svg"><image href="text:/etc/passwd"/></svg>', svg)
  empty <- file.path(dir, "e.png")
  file.create(empty)
  expect_identical(image_kind(png), "png")
  expect_identical(image_kind(jpg), "jpeg")
  expect_identical(image_kind(mvg), NA_character_)
  expect_identical(image_kind(svg), NA_character_)
  expect_identical(image_kind(empty), NA_character_)
  expect_identical(image_kind(file.path(dir, "gone.png")), NA_character_)
})

test_that("a file named .png holding MVG or SVG reaches neither magick nor ellmer", {
  dir <- new_dir()
  mvg <- file.path(dir, "plot.png")
  writeLines(c("push graphic-context", "viewbox 0 0 1 1",
               "image over 0,0 1,1 'msl:/tmp/x.msl'", "pop graphic-context"), mvg)
  svg <- file.path(dir, "plot2.jpeg")
  writeLines('<?xml version="1.0"?><svg/>', svg)
  for (magick in c(TRUE, FALSE)) {
    calls <- recorder()
    f <- fake(calls, magick)
    expect_null(f(mvg))
    expect_null(f(svg))
    expect_identical(calls$read, character())
    expect_length(calls$content, 0L)
  }
})

test_that("a real PNG goes through the PNG decoder only, and ellmer does not resize", {
  dir <- new_dir()
  png <- write_png(file.path(dir, "plot.png"))
  calls <- recorder()
  expect_identical(fake(calls, TRUE)(png), "content")
  expect_identical(calls$read, paste0("png:", png))
  expect_identical(calls$content[[1]]$content_type, "image/png")
  expect_identical(calls$content[[1]]$resize, "none")
  expect_identical(image_kind(calls$content[[1]][[1]]), "png")
  # Without magick: the file itself, no decoder at all.
  calls <- recorder()
  expect_identical(fake(calls, FALSE)(png), "content")
  expect_identical(calls$read, character())
  expect_identical(calls$content[[1]][[1]], png)
  expect_identical(calls$content[[1]]$resize, "none")
})

test_that("a JPEG signature picks the JPEG decoder", {
  dir <- new_dir()
  jpg <- file.path(dir, "x.png")  # the name says PNG; the bytes say JPEG
  writeBin(c(as.raw(c(0xff, 0xd8, 0xff, 0xe0)), raw(60)), jpg)
  calls <- recorder()
  expect_identical(fake(calls, TRUE)(jpg), "content")
  expect_identical(calls$read, paste0("jpeg:", jpg))
  expect_identical(calls$content[[1]]$content_type, "image/jpeg")
})

test_that("what magick wrote is checked again before it is sent", {
  dir <- new_dir()
  png <- write_png(file.path(dir, "plot.png"))
  sent <- FALSE
  r <- image_content(png, has_magick = TRUE, read = function(spec) spec,
                     scale = function(img) img,
                     write = function(img, to, format) writeLines("not an image", to),
                     content = function(...) sent <<- TRUE)
  expect_null(r)
  expect_false(sent)
})
