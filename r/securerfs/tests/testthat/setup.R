# Tests run against a real securerfs mount: SECURERFS_MOUNT if set, else a
# private mount started by the package from SECURERFS_BIN (or PATH).  The
# private mounts are unmounted when the test process exits.
options(securerfs.pool = 2L)
securerfs_test_mount <- tryCatch(securerfs_mount(), error = function(e) {
  message("securerfs tests: no mount (", conditionMessage(e), ")")
  NULL
})
