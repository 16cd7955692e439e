# json_simplify_cells() and json_simplify_budget() come from
# inst/json_shape.R, which the tool server (inst/tool_server.R, run without
# the package) sources too.
.onLoad <- function(libname, pkgname) {
  sys.source(system.file("json_shape.R", package = pkgname, lib.loc = libname,
                         mustWork = TRUE),
             envir = parent.env(environment()))
  # result.json parsed without simplifying: jsonlite's own parser, without
  # parse_json()'s dispatch (3 us a result instead of 7.6 here), when this
  # jsonlite has it; else parse_result() stays parse_json() (R/utils.R).
  ns <- asNamespace("jsonlite")
  if (exists("parse_string", envir = ns, inherits = FALSE)) {
    parse_string <- get("parse_string", envir = ns)
    assign("parse_result", function(txt) parse_string(txt, FALSE),
           envir = parent.env(environment()))
  }
}

.onUnload <- function(libpath) {
  unmount_all()
  d <- .securerfs$private_dir
  if (!is.null(d)) unlink(d, recursive = TRUE)
}
