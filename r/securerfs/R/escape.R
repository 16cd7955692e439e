# Text from the sandbox, made safe for a terminal (round 3, finding 7).
#
# result.json keeps the exact text the code produced (its error message, what
# it printed), and the client used to build its conditions' messages and the
# value's "output" attribute from it: `stop("\033]0;PWNED\007\033[2J")` in the
# session retitled and cleared the user's terminal when R printed the error,
# and a cat() of ESC ] 52 wrote the user's clipboard.  A terminal obeys C0
# controls (ESC starts every sequence), DEL, and C1 controls (U+009B is CSI,
# U+009D is OSC, on terminals that take 8-bit controls), so these leave the
# client escaped exactly as the mount escapes its text files (common/escape.h):
# a C0 control (newline and tab kept) and DEL as \xHH, a C1 control as
# \u00HH, a byte that is not part of valid UTF-8 as \xHH; two lowercase hex
# digits; a backslash is not doubled (the text is for reading, not decoding).
#
# Escaped: the message of every condition a run raises, and the "output"
# attribute (and a condition's `$output`).  Exact: the value itself (its
# strings as the code made them: print() shows them quoted and escaped), the
# parsed result.json a condition carries as `$result`, and the session's
# result.json and value.json files, for a program that asks for the exact text.

# x (a character vector) with the controls a terminal obeys escaped; its
# attributes and NAs kept.
escape_text <- function(x) {
  if (!is.character(x) || length(x) == 0L) return(x)
  valid <- validUTF8(x)
  need <- !valid
  # On the bytes: in UTF-8 a C1 control is C2 80 to C2 9F.
  need[valid] <- grepl("[\\x01-\\x08\\x0b-\\x1f\\x7f]|\\xc2[\\x80-\\x9f]",
                       x[valid], perl = TRUE, useBytes = TRUE)
  need[is.na(x)] <- FALSE
  for (i in which(need)) {
    x[i] <- if (valid[i]) escape_valid(x[i]) else escape_bytes(x[i])
  }
  x
}

# One valid UTF-8 string, escaped code point by code point.
escape_valid <- function(s) {
  cp <- utf8ToInt(s)
  out <- intToUtf8(cp, multiple = TRUE)
  c0 <- (cp < 32L & !cp %in% c(9L, 10L)) | cp == 127L
  c1 <- cp >= 128L & cp <= 159L
  out[c0] <- sprintf("\\x%02x", cp[c0])
  out[c1] <- sprintf("\\u%04x", cp[c1])
  res <- paste(out, collapse = "")
  Encoding(res) <- "UTF-8"
  res
}

# A string that is not valid UTF-8: each valid character as escape_valid()
# has it, each other byte as \xHH.
escape_bytes <- function(s) {
  b <- charToRaw(s)
  n <- length(b)
  out <- character(n)
  k <- 0L
  i <- 1L
  while (i <= n) {
    v <- as.integer(b[i])
    len <- if (v < 0x80) 1L else if (v >= 0xc2 && v <= 0xdf) 2L else
      if (v >= 0xe0 && v <= 0xef) 3L else if (v >= 0xf0 && v <= 0xf4) 4L else 0L
    piece <- NULL
    if (len > 0L && i + len - 1L <= n) {
      ch <- rawToChar(b[i:(i + len - 1L)])
      Encoding(ch) <- "UTF-8"
      if (validUTF8(ch)) piece <- escape_valid(ch)
    }
    k <- k + 1L
    if (is.null(piece)) {
      out[k] <- sprintf("\\x%02x", v)
      i <- i + 1L
    } else {
      out[k] <- piece
      i <- i + len
    }
  }
  res <- paste(out[seq_len(k)], collapse = "")
  Encoding(res) <- "UTF-8"
  res
}
