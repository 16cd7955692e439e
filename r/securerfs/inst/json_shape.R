# How many cells jsonlite's simplification (fromJSON(simplifyVector = TRUE))
# would make of a JSON value, counted from the value parsed without it
# (parse_json(simplifyVector = FALSE)).  An array of objects becomes a data
# frame with one column per distinct key, so n objects with n different
# keys make n^2 cells out of text of size n: 197 KB of them took R to
# 3.1 GB (docs/security.md, "Round 9").  The walk stops once past budget,
# so it costs at most about budget steps; compare its answer with budget.
#
# Sourced by the package (R/zzz.R) and by the tool server, a script that
# runs without the package (inst/tool_server.R).
json_simplify_cells <- function(x, budget) {
  cells <- 0
  walk <- function(node) {
    if (cells > budget || !is.list(node) || !length(node)) return()
    lists <- vapply(node, is.list, NA)
    if (!any(lists)) return()
    nm <- if (is.null(names(node)) && all(lists | vapply(node, is.null, NA)))
      lapply(node[lists], names)
    if (length(nm) && !any(vapply(nm, is.null, NA))) {
      # Objects (and nulls): a data frame, whose columns are simplified in
      # turn.
      keys <- unique(unlist(nm, use.names = FALSE))
      cells <<- cells + length(node) * max(1, length(keys))
      for (k in keys) {
        if (cells > budget) return()
        walk(lapply(node, .subset2, k))
      }
      return()
    }
    for (e in node[lists]) walk(e)
  }
  walk(x)
  cells
}

# The budget for text of n bytes: what a data frame as dense as its text
# allows, and never less than a million cells.
json_simplify_budget <- function(n) max(2^20, 4 * n)
