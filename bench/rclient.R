# The R client's figures (scripts/bench): SecureSession$execute("1+1") on a
# kept session, and SecureSession$new() to its first result, on the mount
# in SECURERFS_MOUNT.  Prints "key value" lines.
#   Rscript bench/rclient.R ITERATIONS NEW_RUNS
suppressPackageStartupMessages(library(securerfs))
args <- commandArgs(trailingOnly = TRUE)
n <- if (length(args) >= 1) as.integer(args[[1]]) else 2000L
runs <- if (length(args) >= 2) as.integer(args[[2]]) else 20L
stats <- function(key, v, scale) {
  q <- stats::quantile(v, c(0.5, 0.9, 0.99), type = 1, names = FALSE)
  cat(sprintf("%s_p50 %.1f\n%s_p90 %.1f\n%s_p99 %.1f\n", key, q[1] * scale,
              key, q[2] * scale, key, q[3] * scale))
}
s <- SecureSession$new()
for (i in 1:50) stopifnot(identical(s$execute("1+1"), 2L))
v <- numeric(n)
for (i in seq_len(n)) {
  t0 <- Sys.time() # microseconds (gettimeofday)
  s$execute("1+1")
  v[i] <- as.numeric(Sys.time()) - as.numeric(t0)
}
s$close()
stats("r_execute_us", v, 1e6)
w <- numeric(runs)
for (i in seq_len(runs + 2L)) {
  t0 <- Sys.time()
  s <- SecureSession$new()
  x <- s$execute("1+1")
  t <- as.numeric(Sys.time()) - as.numeric(t0)
  stopifnot(identical(x, 2L))
  s$close()
  if (i > 2L) w[i - 2L] <- t
  Sys.sleep(0.05) # the mount's pool refills
}
stats("r_new_ms", w, 1e3)
