# What the client takes out of a sandbox can hurt neither the host nor the
# next user (issue 16): copies with fixed modes and checked sizes, walks that
# follow no link, a pool that gives each use a fresh session, and the ellmer
# tool's image path.  Files given set-id bits hold plain text (nothing that
# could run) and are removed by each test.

mode_of <- function(path) as.integer(file.info(path, extra_cols = FALSE)$mode)
setid_bits <- function(path) bitwAnd(mode_of(path), strtoi("7000", 8L))
expected_mode <- function(exec) {
  bitwAnd(if (exec) strtoi("755", 8L) else strtoi("644", 8L),
          bitwNot(as.integer(Sys.umask(NA))))
}

# Rscript -e expr with this package installed, at most timeout seconds.
run_r <- function(expr, timeout = 60) {
  lib <- dirname(system.file(package = "securerfs"))
  processx::run(file.path(R.home("bin"), "Rscript"), c("-e", expr),
                env = c("current", R_LIBS = paste(c(lib, .libPaths()), collapse = ":")),
                timeout = timeout, error_on_status = FALSE)
}

test_that("copy_out writes a fixed mode, never set-id, whatever the source", {
  copy_out <- getFromNamespace("copy_out", "securerfs")
  dir <- tempfile("host-side-")
  dir.create(dir, mode = "0700")
  on.exit(unlink(dir, recursive = TRUE))
  src <- file.path(dir, "report.csv")
  writeLines("a,b", src)
  # As the client would see it without the mount's masking: set-uid,
  # set-gid, sticky, world-writable.
  Sys.chmod(src, "6777", use_umask = FALSE)
  expect_identical(setid_bits(src), strtoi("6000", 8L))
  dest <- file.path(dir, "copy.csv")
  copy_out(src, dest, max_bytes = 1e6)
  expect_identical(readLines(dest), "a,b")
  expect_identical(setid_bits(dest), 0L)
  expect_identical(bitwAnd(mode_of(dest), strtoi("777", 8L)), expected_mode(TRUE))
  Sys.chmod(src, "4644", use_umask = FALSE)
  copy_out(src, dest, max_bytes = 1e6)
  expect_identical(bitwAnd(mode_of(dest), strtoi("7777", 8L)), expected_mode(FALSE))
  # An existing link at dest is replaced, not followed.
  victim <- file.path(dir, "victim")
  writeLines("keep", victim)
  unlink(dest)
  file.symlink(victim, dest)
  copy_out(src, dest, max_bytes = 1e6)
  expect_identical(readLines(victim), "keep")
  expect_identical(Sys.readlink(dest), "")
  expect_identical(readLines(dest), "a,b")
  # Size checked before reading: nothing is written.
  unlink(dest)
  expect_error(copy_out(src, dest, max_bytes = 2), "over max_bytes")
  expect_false(file.exists(dest))
  # A file that is larger than it said (it grew): at most max_bytes read.
  expect_identical(file.info("/proc/self/status")$size, 0)
  expect_error(copy_out("/proc/self/status", dest, max_bytes = 10), "grew past")
  expect_false(file.exists(dest))
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE),
                   c("report.csv", "victim"))  # no temporary file left
  Sys.chmod(src, "0600", use_umask = FALSE)
})

test_that("download never makes a set-id file and checks the size first", {
  skip_if_no_mount()
  skip_if(external_mount(), "SECURERFS_MOUNT is set")
  # sandbox = FALSE: no jail, so the code's chmod surely takes effect.
  s <- SecureSession$new(sandbox = FALSE)
  on.exit(s$close())
  expect_identical(
    s$execute('writeBin(charToRaw("x,y\\n"), "report.csv");
               Sys.chmod("report.csv", "6777", use_umask = FALSE);
               format(file.info("report.csv")$mode)'), "6777")
  # The mount shows no set-id bit...
  expect_identical(setid_bits(file.path(s$path(), "files", "report.csv")), 0L)
  dir <- tempfile("dl-")
  dir.create(dir, mode = "0700")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  dest <- file.path(dir, "report.csv")
  # ...and the copy has none either (a root client used to get -rwsr-sr-x).
  expect_identical(s$download("report.csv", dest), dest)
  expect_identical(readBin(dest, "raw", 100), charToRaw("x,y\n"))
  expect_identical(setid_bits(dest), 0L)
  expect_identical(bitwAnd(mode_of(dest), strtoi("777", 8L)), expected_mode(TRUE))
  s$execute('writeLines("plain", "p.txt"); Sys.chmod("p.txt", "644", use_umask = FALSE)')
  s$download("p.txt", file.path(dir, "p.txt"))
  expect_identical(bitwAnd(mode_of(file.path(dir, "p.txt")), strtoi("7777", 8L)),
                   expected_mode(FALSE))
  # Over max_bytes: refused before a byte is read, nothing written.
  s$execute('writeBin(raw(20000), "big.bin")')
  expect_error(s$download("big.bin", file.path(dir, "big.bin"), max_bytes = 10000),
               "over max_bytes")
  expect_false(file.exists(file.path(dir, "big.bin")))
  old <- options(securerfs.download_max_bytes = 100)
  on.exit(options(old), add = TRUE)
  expect_error(s$download("big.bin", file.path(dir, "big.bin")), "over max_bytes")
  options(old)
  s$download("big.bin", file.path(dir, "big.bin"))
  expect_identical(file.size(file.path(dir, "big.bin")), 20000)
  expect_error(s$download("big.bin", file.path(dir, "x"), max_bytes = -1), "max_bytes")
})

test_that("download from a jailed session: no set-id bit either", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  # The sandbox may refuse the chmod; whatever it did, the copy has no bit.
  s$execute('writeBin(charToRaw("z"), "r.csv");
             try(Sys.chmod("r.csv", "6777", use_umask = FALSE), silent = TRUE); 1')
  dest <- tempfile()
  on.exit(unlink(dest), add = TRUE)
  s$download("r.csv", dest)
  expect_identical(setid_bits(dest), 0L)
})

test_that("the workspace walk follows no link and ends", {
  walk <- getFromNamespace("workspace_walk", "securerfs")
  root <- tempfile("walk-")
  dir.create(file.path(root, "d"), recursive = TRUE)
  on.exit(unlink(root, recursive = TRUE))
  # The issue's three links to ".", on a host directory: nothing in the
  # way, so the client's own walk is what must not follow them.
  for (n in c("a", "b", "c")) file.symlink(".", file.path(root, "d", n))
  writeLines("1", file.path(root, "d", "f.txt"))
  writeLines("2", file.path(root, "top.txt"))
  file.symlink("top.txt", file.path(root, "link.txt"))
  # In a separate R with a time limit: if the walk followed the links it
  # would never return.
  r <- run_r(sprintf("cat(securerfs:::workspace_walk('%s')$name, sep = '\\n')", root))
  expect_false(r$timeout)
  expect_identical(strsplit(r$stdout, "\n")[[1]], c("d/f.txt", "top.txt"))
  w <- walk(root)
  expect_identical(w$name, c("d/f.txt", "top.txt"))
  expect_identical(w$size, c(2, 2))
  # Depth and entry bounds.
  deep <- file.path(root, paste(rep("x", 10), collapse = "/"))
  dir.create(deep, recursive = TRUE)
  writeLines("deep", file.path(deep, "deep.txt"))
  expect_false("x/x/x/x/x/x/x/x/x/x/deep.txt" %in% walk(root, max_depth = 5)$name)
  expect_true("x/x/x/x/x/x/x/x/x/x/deep.txt" %in% walk(root)$name)
  expect_lte(nrow(walk(root, max_entries = 2)), 2)
})

test_that("$files() over links to '.' returns, and lists names as the mount shows them", {
  skip_if_no_mount()
  # In a separate R with a time limit, on the same mount: a walk that
  # followed the links would never return.
  r <- run_r(sprintf('library(securerfs); s <- SecureSession$new(mount = "%s");
    s$execute("dir.create(\'d\'); for (n in c(\'a\', \'b\', \'c\')) file.symlink(\'.\', file.path(\'d\', n));
               writeLines(\'1\', \'d/in.txt\'); writeLines(\'2\', \'esc\\\\033name.txt\'); 1") -> v;
    f <- s$files(); dest <- tempfile(); s$download(f$name[2], dest);
    cat(f$name, readLines(dest), sep = "\\n"); s$close()', securerfs_mount()))
  expect_false(r$timeout)
  expect_identical(r$status, 0L)
  # The listed spelling of the name with ESC is what download takes.
  expect_identical(strsplit(r$stdout, "\n")[[1]], c("d/in.txt", "esc\\x1bname.txt", "2"))
})

test_that("output_handler lines and the value's output are escaped alike", {
  skip_if_no_mount()
  s <- SecureSession$new()
  on.exit(s$close())
  got <- character()
  v <- s$execute('cat("\\033]0;PWNED\\007title\\n"); Sys.sleep(0.3); cat("x\\033[2Jy\\n"); 5',
                 output_handler = function(l) got <<- c(got, l))
  expect_identical(got, c("\\x1b]0;PWNED\\x07title", "x\\x1b[2Jy"))
  # Round 3, finding 7: the "output" attribute reaches the R prompt, so it
  # is escaped as the handler's lines are (it was the exact text).
  expect_identical(attr(v, "output"), got)
})

test_that("a pool gives each use a fresh session: state and workspace", {
  skip_if_no_mount()
  pool <- SecureSessionPool$new(size = 1)
  on.exit(pool$close())
  priv <- pool$.__enclos_env__$private
  a_dir <- priv$sessions[[1]]$path()
  # User A leaves a file in /work (also HOME), a variable, and a trace on a
  # function B's code will call.
  pool$execute('writeLines("A was here", ".A_notes"); secret <- "A";
                trace("mean", quote(cat("traced by A\\n")), print = FALSE); 1')
  expect_false(dir.exists(a_dir))  # A's session is closed, its files gone
  b <- pool$execute('c(file.exists(".A_notes"), file.exists("~/.A_notes"), exists("secret"),
                       inherits(mean, "functionWithTrace"))')
  expect_identical(b, c(FALSE, FALSE, FALSE, FALSE))
  v <- pool$execute("mean(1:3)")
  expect_equal(as.numeric(v), 2)
  expect_null(attr(v, "output"))  # no trace output
  expect_identical(pool$available(), 1L)
  expect_identical(pool$status()$dead, 0L)
})

test_that("reset_between_uses = FALSE keeps one user's state", {
  skip_if_no_mount()
  pool <- SecureSessionPool$new(size = 1, reset_between_uses = FALSE)
  on.exit(pool$close())
  pool$execute('x <- 41; writeLines("kept", "k.txt")')
  expect_equal(as.numeric(pool$execute('c(x + 1, file.exists("k.txt"))')), c(42, 1))
})

test_that("a reset that cannot make a fresh session never hands the old one back", {
  skip_if_no_mount()
  pool <- SecureSessionPool$new(size = 1)
  on.exit(pool$close())
  priv <- pool$.__enclos_env__$private
  used <- priv$sessions[[1]]
  good <- priv$args
  priv$args$mount <- tempdir()  # not a mount: SecureSession$new() fails
  expect_identical(pool$execute('secret <- "A"; 1'), 1L)
  expect_false(used$is_alive())
  expect_null(priv$sessions[[1]])
  expect_identical(pool$available(), 1L)
  # The next use makes one, and says why when it cannot.
  expect_error(pool$execute("1"), "no securerfs mount")
  expect_identical(pool$available(), 1L)
  priv$args <- good
  expect_false(pool$execute('exists("secret")'))
})

test_that("the ellmer tool copies images with their size checked first", {
  skip_if_no_mount()
  skip_if(external_mount(), "SECURERFS_MOUNT is set")
  copy_images <- getFromNamespace("copy_images", "securerfs")
  s <- SecureSession$new(sandbox = FALSE)
  on.exit(s$close())
  s$execute('png("small.png"); plot(1); dev.off();
             Sys.chmod("small.png", "6755", use_umask = FALSE);
             writeBin(raw(6e6), "huge.png"); file.symlink("small.png", "link.png"); 1')
  dir <- tempfile("imgs-")
  dir.create(dir, mode = "0700")
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  got <- copy_images(s, c("huge.png", "small.png", "link.png", "gone.png"), dir)
  # Only the small one: the 6 MB file is never copied (it used to be copied
  # to the temporary directory, then measured), the link is refused.
  expect_identical(basename(got), "2-small.png")
  expect_identical(list.files(dir), "2-small.png")
  expect_identical(setid_bits(got), 0L)
  expect_identical(readBin(got, "raw", 4), as.raw(c(0x89, 0x50, 0x4e, 0x47)))
  # Within the tool's answer without an ellmer that takes images: the text
  # names them.
  res <- getFromNamespace("tool_result_with_images", "securerfs")
  expect_match(res(s, "7", list("small.png"), images_supported = FALSE), "small.png")
})

# Values and tool arguments whose simplification would grow with the square
# of their text (docs/security.md, "Round 9", findings 2 and 3): an array of
# objects, each with its own key, is a data frame of one column per key.
irregular <- "lapply(1:16000, function(i) setNames(list(1L), paste0('k', i)))"

test_that("a value simplified out of proportion to its text comes back as lists", {
  s <- SecureSession$new()
  on.exit(s$close())
  before <- gc(reset = TRUE)
  v <- s$execute(irregular)
  # jsonlite's data frame would have been 16000 x 16000 cells (3.1 GB).
  expect_true(max(gc()[, 6]) < before[2, 2] + 500)
  expect_false(is.data.frame(v))
  expect_length(v, 16000)
  expect_identical(v[[7]], list(k7 = 1L))
  expect_match(attr(v, "value_note"), "left as lists")
  # Regular records are still a data frame, without a note.
  df <- s$execute("data.frame(a = 1:3, b = c('x', 'y', 'z'))")
  expect_true(is.data.frame(df))
  expect_null(attr(df, "value_note"))
})

test_that("tool arguments simplified out of proportion are refused, the server goes on", {
  skip_if_no_tools()
  tools <- list(securer_tool("echo", "Echo anything", fn = function(x) length(x),
                             args = list(x = "")))
  s <- SecureSession$new(tools = tools)
  on.exit(s$close())
  msg <- s$execute(sprintf(
    "tryCatch(echo(%s), error = function(e) conditionMessage(e))", irregular))
  expect_match(msg, "Tool arguments refused")
  expect_identical(s$execute("echo(list(list(a = 1), list(a = 2, b = 3)))"), 2L)
})

test_that("the tool process's address space is securerfs.tool_memory", {
  skip_if_no_tools()
  old <- options(securerfs.tool_memory = 512 * 2^20)
  on.exit(options(old))
  tools <- list(
    securer_tool("as_limit", "The tool process's RLIMIT_AS", fn = function() {
      l <- grep("^Max address space", readLines("/proc/self/limits"), value = TRUE)
      strsplit(l, " +")[[1]][4:5]
    }),
    securer_tool("hog", "Allocates 1 GiB", fn = function() length(numeric(2^27))))
  s <- SecureSession$new(tools = tools)
  on.exit(s$close(), add = TRUE)
  expect_identical(s$execute("as_limit()"), rep("536870912", 2))
  expect_error(s$execute("hog()"), "cannot allocate", class = "securerfs_runtime_error")
  expect_identical(s$execute("as_limit()"), rep("536870912", 2))
})
