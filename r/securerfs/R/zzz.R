# json_simplify_cells() and json_simplify_budget() come from
# inst/json_shape.R, which the tool server (inst/tool_server.R, run without
# the package) sources too.
.onLoad <- function(libname, pkgname) {
  sys.source(system.file("json_shape.R", package = pkgname, lib.loc = libname,
                         mustWork = TRUE),
             envir = parent.env(environment()))
}

.onUnload <- function(libpath) {
  unmount_all()
  d <- .securerfs$private_dir
  if (!is.null(d)) unlink(d, recursive = TRUE)
}
