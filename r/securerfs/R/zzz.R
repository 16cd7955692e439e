.onUnload <- function(libpath) {
  unmount_all()
  d <- .securerfs$private_dir
  if (!is.null(d)) unlink(d, recursive = TRUE)
}
