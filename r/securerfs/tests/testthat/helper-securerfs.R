skip_if_no_mount <- function() {
  if (is.null(securerfs_mount_or_null())) {
    skip("no securerfs mount: set SECURERFS_BIN or SECURERFS_MOUNT")
  }
}

securerfs_mount_or_null <- function() {
  tryCatch(securerfs_mount(), error = function(e) NULL)
}

has_tools <- function() {
  m <- securerfs_mount_or_null()
  if (is.null(m)) return(FALSE)
  s <- try(SecureSession$new(), silent = TRUE)
  if (inherits(s, "try-error")) return(FALSE)
  on.exit(s$close())
  dir.exists(file.path(s$path(), "tools"))
}

skip_if_no_tools <- function() {
  skip_if_no_mount()
  if (!has_tools()) skip("this securerfs mount has no tools/ (tools issue)")
}

# Whether the mount was given from outside (then sandbox = FALSE cannot get
# its own mount).
external_mount <- function() {
  nzchar(Sys.getenv("SECURERFS_MOUNT")) ||
    !is.null(getOption("securerfs.mount"))
}

stats_of <- function() {
  jsonlite::fromJSON(paste(readLines(file.path(securerfs_mount(), "stats"),
                                     warn = FALSE), collapse = "\n"))
}

# The seed's two database tools (seed/ellmer-integration.md), verbatim:
# "data.db" is relative to the working directory, which the tool process
# shares.
seed_db_tools <- function() {
  list(
    securer_tool("query_db", "Query a database table by name",
      fn = function(table, limit) {
        con <- DBI::dbConnect(RSQLite::SQLite(), "data.db")
        on.exit(DBI::dbDisconnect(con))
        DBI::dbGetQuery(con, sprintf("SELECT * FROM %s LIMIT %d", table, limit))
      },
      args = list(table = "character", limit = "numeric")),

    securer_tool("list_tables", "List available database tables",
      fn = function() {
        con <- DBI::dbConnect(RSQLite::SQLite(), "data.db")
        on.exit(DBI::dbDisconnect(con))
        DBI::dbListTables(con)
      },
      args = list())
  )
}
