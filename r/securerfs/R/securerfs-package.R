# The package's help page (?securerfs) and the imports of NAMESPACE.

#' securerfs: run untrusted R code in sandboxed sessions through a mount
#'
#' @description
#' An R client for securerfs, a filesystem in which every directory under
#' `sessions/` is a live, sandboxed R session. Its API mirrors the securer
#' package: [SecureSession], [SecureSessionPool], [securer_tool()],
#' [execute_r()], [with_secure_session()], [default_limits()],
#' [validate_code()] and the ellmer tool [as_ellmer_tool()] /
#' [securer_as_ellmer_tool()]; code written for securer runs after changing
#' `library(securer)` to `library(securerfs)`. The mount is found or started
#' by [securerfs_mount()].
#'
#' @section Differences from securer:
#' * **Where code runs.** securer starts a callr child per session
#'   (bubblewrap on Linux); securerfs's sessions are directories of a mount
#'   whose daemon runs each in its own jail (namespaces, seccomp, limits set
#'   from outside). The package needs a mount, or the `securerfs` program to
#'   start one.
#' * **Values cross as JSON, not RDS.** `$execute()` rebuilds the value from
#'   `value.json` with jsonlite: atomic vectors, `NULL`, `NA`, lists and data
#'   frames round-trip, but names of atomic vectors, factor levels, classes
#'   such as Date (strings) and the double/integer distinction for whole
#'   numbers (integers) are lost; a function or environment comes back as
#'   its printed text with an attribute `value_note`. securer returns the R
#'   object itself.
#' * **Timeouts keep the state.** The run is interrupted and the session
#'   keeps its variables; securer kills and restarts the child (state lost).
#'   The message is the same ("Execution timed out after N seconds").
#' * **A crash does not kill the session.** A fresh worker replaces a crashed
#'   one (state lost, and the error says so); the session stays usable. A
#'   session is "not running" only once closed.
#' * **Tools run in a separate host process**, not in the R process that
#'   created the session: they see the client's working directory, library
#'   paths and the objects their functions enclose (a global function gets
#'   copies of the globals it names), not later changes to the client's
#'   global environment; what they print goes to the tool process's stderr.
#'   Argument types are checked in the sandbox and by the daemon.
#' * **`SecureSessionPool` resets by default** (`reset_between_uses = TRUE`;
#'   securer's default is `FALSE`), and a reset is a fresh session (state and
#'   workspace), not a restart of R.
#' * **Copies out are bounded and get fixed modes**: `$download()` takes
#'   `max_bytes` and never makes a set-id file.
#' * **`sandbox = FALSE`** uses a private mount started with
#'   `-o sandbox=none`; a mount you point the package at is used as it is
#'   (with a warning if its sandbox does not match).
#' * **`SecureSession$new(sandbox = TRUE)`** is the default (securer's is
#'   `FALSE`); `sandbox_strict` only matters for a mount without a sandbox.
#' * **Limits not named keep the mount's defaults** (securer: unlimited);
#'   `list()` lifts all.
#' * **`audit_log`** is written by the client (and the tool process, for
#'   `tool_call`); the daemon's own audit log is the mount option
#'   `-o audit_log=PATH`.
#' * **`max_tool_calls`** is enforced by the package's tool process during
#'   the run and checked against `result.json`'s `tool_calls` after it; the
#'   mount also caps calls per run.
#' * **`securer_as_ellmer_tool()` is not deprecated** here; it is
#'   `as_ellmer_tool()`. Tool errors without ellmer installed (only the
#'   internal function can be called then) are plain objects of class
#'   `securerfs_tool_error`.
#' * Not provided: securer's `securer_tool_class` (tools are S3 objects of
#'   class `securer_tool`), tracing through securetrace, legacy named lists
#'   of functions as `tools`.
#'
#' @section Options:
#' * `securerfs.mount`: the mount to use (else `SECURERFS_MOUNT`).
#' * `securerfs.bin`: the `securerfs` program for a private mount (else
#'   `SECURERFS_BIN`, else `PATH`).
#' * `securerfs.pool`: the private mount's `-o pool=N` (default 1).
#' * `securerfs.options`: more `-o` options for a private mount.
#' * `securerfs.download_max_bytes`: `$download()`'s default `max_bytes`
#'   (256 MiB).
#' * `securerfs.tool_timeout`: seconds per tool call (default 60).
#' * `securerfs.tool_memory`: the tool process's address space, bytes
#'   (default 4 GiB).
#'
#' @importFrom R6 R6Class
#' @useDynLib securerfs, .registration = TRUE
"_PACKAGE"
