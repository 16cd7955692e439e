# The ellmer tool: execute_r_code(code).

#' An ellmer tool that runs R code in a sandboxed session
#'
#' @description
#' Returns `ellmer::tool(fun, description, arguments = list(code =
#' ellmer::type_string(...)), name = "execute_r_code")`, to register with
#' `chat$register_tool()`. The model passes R code as a string; the result is
#' the session's formatted value (the text of its `output` file: `"NULL"`, a
#' scalar as `as.character()`, a data frame's `print()` cut after 30 rows
#' with `... (N rows total)`, anything else's `print()` cut after 50 lines).
#' Every failure (a syntax error, an R error, a timeout, a crashed or closed
#' session, a tool called with an argument of the wrong type) comes back as
#' `ellmer::ContentToolResult(error = message)`, so the chat goes on and the
#' model can react.
#'
#' @details
#' When `session` is `NULL` the tool creates its own session with `tools`,
#' `sandbox` and `limits`, and closes it when the tool is garbage collected
#' (or R exits). A session passed in is left to its owner: close it
#' yourself. The description given to the model names the session's tools
#' with their arguments, and tells it to save plots as PNG files in its
#' working directory.
#'
#' PNG and JPEG files a call creates in the workspace (at most four, each
#' checked against 5 MB before it is copied out with
#' `SecureSession$download()`) are sent to the model beside the text with
#' ellmer >= 0.4.0 (scaled down when magick is installed); with an older
#' ellmer the text names them. An image is sent only when its first bytes are
#' a PNG or JPEG signature, whatever its name, and only ImageMagick's PNG or
#' JPEG decoder reads it: its name is the sandboxed code's choice, and
#' ImageMagick would otherwise pick a decoder from the bytes (MVG, SVG and
#' MSL read and write files as the host user).
#'
#' The two names are the same function (securer deprecated
#' `securer_as_ellmer_tool()`; here both are current). ellmer (>= 0.3.0) must
#' be installed; without it, the function behind the tool (internal) returns
#' its errors as plain objects of class `securerfs_tool_error`.
#'
#' @param session A [SecureSession], or `NULL`.
#' @param tools A list of [securer_tool()] objects (only when `session` is
#'   `NULL`).
#' @param sandbox Logical (only when `session` is `NULL`).
#' @param limits Resource limits (only when `session` is `NULL`).
#' @param timeout Seconds for each run (default 30); `NULL`: none.
#' @return An ellmer `ToolDef`.
#' @examples
#' \dontrun{
#' library(ellmer)
#' chat <- chat_openai()
#' chat$register_tool(securer_as_ellmer_tool())
#' chat$chat("What is the sum of the first 100 prime numbers?")
#' }
#' @export
as_ellmer_tool <- function(session = NULL, tools = list(), sandbox = TRUE,
                           limits = NULL, timeout = 30) {
  if (!requireNamespace("ellmer", quietly = TRUE)) {
    stop("Package 'ellmer' is required for as_ellmer_tool(): ",
         "install.packages(\"ellmer\").", call. = FALSE)
  }
  fun <- securer_tool_function(session = session, tools = tools,
                               sandbox = sandbox, limits = limits,
                               timeout = timeout)
  ellmer::tool(
    fun,
    description = tool_description(attr(fun, "session")),
    arguments = list(
      code = ellmer::type_string(
        "R code to execute, as one string. The value of the last expression is returned."
      )
    ),
    name = "execute_r_code"
  )
}

#' @rdname as_ellmer_tool
#' @export
securer_as_ellmer_tool <- function(session = NULL, tools = list(),
                                   sandbox = TRUE, limits = NULL,
                                   timeout = 30) {
  as_ellmer_tool(session = session, tools = tools, sandbox = sandbox,
                 limits = limits, timeout = timeout)
}

tool_description <- function(session) {
  desc <- paste0(
    "Execute R code in a secure sandboxed R session. ",
    "The code runs in an isolated R process with no network access and no ",
    "access to the host's files. Pass a single string of valid R code. ",
    "The value of the last expression is returned as text. Variables ",
    "persist between calls. The working directory is a workspace whose ",
    "files are kept between calls (files the user uploaded are there too): ",
    "read and write files by relative name. To show a plot, save it as PNG, ",
    "e.g. png(\"trend.png\"); plot(x); dev.off() (a plot drawn without ",
    "opening a device is saved as Rplot001.png); PNG and JPEG files a call ",
    "creates are returned with its result.")
  tl <- if (!is.null(session)) session$tools() else list()
  if (length(tl)) {
    sigs <- vapply(tl, function(t) {
      paste0(t$name, "(", paste(names(t$args), collapse = ", "), ")")
    }, character(1))
    desc <- paste0(desc, " Functions available inside R: ",
                   paste(sigs, collapse = ", "), ".")
  }
  desc
}

# A tool error: ellmer's ContentToolResult when ellmer is installed, else a
# plain object of class securerfs_tool_error with the same fields.
tool_error <- function(msg) {
  if (requireNamespace("ellmer", quietly = TRUE)) {
    ellmer::ContentToolResult(error = msg)
  } else {
    structure(list(value = NULL, error = msg),
              class = "securerfs_tool_error")
  }
}

# The function behind execute_r_code: code -> text, or a tool error.  It
# carries the session as attribute "session".  A session it creates is
# closed when the function is garbage collected.
securer_tool_function <- function(session = NULL, tools = list(),
                                  sandbox = TRUE, limits = NULL,
                                  timeout = 30) {
  holder <- new.env(parent = emptyenv())
  if (is.null(session)) {
    session <- SecureSession$new(tools = tools, sandbox = sandbox,
                                 limits = limits)
    holder$owned <- session
    reg.finalizer(holder, function(e) {
      if (!is.null(e$owned)) try(e$owned$close(), silent = TRUE)
    }, onexit = TRUE)
  } else if (!inherits(session, "SecureSession")) {
    stop("`session` must be a SecureSession or NULL.", call. = FALSE)
  }
  holder$session <- session
  fun <- function(code) {
    s <- holder$session
    if (!is.character(code) || length(code) < 1L || anyNA(code)) {
      return(tool_error("`code` must be a string of R code."))
    }
    if (!s$is_alive()) {
      return(tool_error(paste(
        "The R session is no longer running (it was closed).",
        "Create a new tool with securer_as_ellmer_tool().")))
    }
    tryCatch({
      res <- s$.__enclos_env__$private$execute_checked(
        code, timeout, TRUE, NULL, NULL, 100000L, NULL, text = TRUE)
      # ellmer echoes a tool's result to the console: escaped (R/escape.R).
      tool_result_with_images(s, escape_text(res$output), res$result$files)
    }, error = function(e) {
      tool_error(sanitize_error_message(conditionMessage(e), 2000L))
    })
  }
  attr(fun, "session") <- session
  fun
}

# PNG and JPEG files a run created or changed, as listed in its result
# (regular files only), at most max of them.
new_images <- function(files, max = 4L) {
  files <- unlist(files %||% list(), use.names = FALSE)
  imgs <- files[grepl("\\.(png|jpe?g)$", files, ignore.case = TRUE)]
  utils::head(imgs, max)
}

# Whether this ellmer takes Content objects as a tool's value (0.4.0: they
# are sent to the model beside the text, as images).
ellmer_tool_images <- function() {
  requireNamespace("ellmer", quietly = TRUE) &&
    utils::packageVersion("ellmer") >= "0.4.0"
}

# The largest image the tool copies out of the workspace and sends.
image_max_bytes <- 5e6

# Copy the images out of the session's workspace into dir, each checked
# against max_bytes before any of it is read and written with a fixed mode
# (SecureSession$download()); an image that is too large, gone, or a link is
# left out.  Returns the paths of the copies.
copy_images <- function(session, imgs, dir, max_bytes = image_max_bytes) {
  out <- character()
  for (i in seq_along(imgs)) {
    dest <- file.path(dir, sprintf("%d-%s", i, basename(imgs[[i]])))
    ok <- tryCatch({
      session$download(imgs[[i]], dest, max_bytes = max_bytes)
      TRUE
    }, error = function(e) FALSE)
    if (ok) out <- c(out, dest)
  }
  out
}

# The tool's answer: the text alone when the run made no image; with
# ellmer >= 0.4.0, a ContentToolResult whose value is the text and the
# images (each copied out of the workspace first, at most 5 MB, its size
# checked before it is read); with an older ellmer, the text naming the new
# files.
tool_result_with_images <- function(session, text, files,
                                    images_supported = ellmer_tool_images()) {
  imgs <- new_images(files)
  if (length(imgs) == 0L) return(text)
  note <- paste0("\n[new image file(s) in the workspace: ",
                 paste(imgs, collapse = ", "), "]")
  if (!images_supported) return(paste0(text, note))
  dir <- tempfile("securerfs-images-")
  dir.create(dir, mode = "0700")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE) # read into memory below
  contents <- list(ellmer::ContentText(paste0(text, note)))
  for (dest in copy_images(session, imgs, dir)) {
    img <- tryCatch(image_content(dest), error = function(e) NULL)
    if (!is.null(img)) contents[[length(contents) + 1L]] <- img
  }
  ellmer::ContentToolResult(value = contents)
}

# The image format a file's first bytes say, "png" or "jpeg", else NA.  The
# name says nothing: the sandboxed code names its files.
image_kind <- function(path) {
  head <- tryCatch(readBin(path, "raw", 8L), error = function(e) raw(),
                   warning = function(w) raw())
  png <- as.raw(c(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a))
  if (length(head) >= 8L && identical(head[1:8], png)) return("png")
  if (length(head) >= 3L && identical(head[1:3], as.raw(c(0xff, 0xd8, 0xff)))) {
    return("jpeg")
  }
  NA_character_
}

# ellmer's content for the copy of an image at path, or NULL when its bytes
# are neither PNG nor JPEG.  ellmer's own resize ("low") hands the file to
# magick::image_read(path), and ImageMagick picks its decoder from the
# bytes: a file the code named plot.png holding MVG, SVG or MSL would be
# read and written by ImageMagick as the host user (round 3, finding 6).
# So the signature is checked first, ellmer is given resize = "none" and
# the content type, and the scaling (when magick is installed) goes through
# magick with the format named ("png:path", "jpeg:path": that decoder
# only), written back as the same format.  read, scale and write are
# magick's functions, content is ellmer::content_image_file (arguments for
# the tests).
image_content <- function(path,
                          has_magick = requireNamespace("magick", quietly = TRUE),
                          read = function(spec) magick::image_read(spec),
                          scale = function(img) {
                            magick::image_resize(img, "512x512>")
                          },
                          write = function(img, to, format) {
                            magick::image_write(img, to, format = format)
                          },
                          content = function(...) {
                            ellmer::content_image_file(...)
                          }) {
  kind <- image_kind(path)
  if (is.na(kind)) return(NULL)
  if (has_magick) {
    small <- paste0(path, "-small")
    write(scale(read(paste0(kind, ":", path))), small, kind)
    if (!identical(image_kind(small), kind)) return(NULL)
    path <- small
  }
  content(path, content_type = paste0("image/", kind), resize = "none")
}
