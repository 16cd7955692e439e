library(testthat)
library(securerfs)

test_check("securerfs")
