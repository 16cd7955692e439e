#!/usr/bin/env python3
"""Turn a text file into a C header holding it as one string constant."""
import sys

name, src, dst = sys.argv[1:4]
data = open(src, "rb").read()
with open(dst, "w") as out:
    out.write("/* generated from %s by scripts/embed.py */\n" % src.split("/")[-1])
    out.write("static const char %s[] =\n" % name)
    for line in data.decode("utf-8").splitlines(True):
        esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        out.write('    "%s"\n' % esc)
    out.write("    ;\n")
