"""The manual pages in doc/ against the programs: every option a program's --help lists is in
its page, and the page documents no option the program does not have; groff formats them
without a warning.

Run:  python3 -m unittest -v test_manpages      (from tests/deploy; APPMSG_BIN_DIR: the programs)
"""

import os
import re
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

sys.dont_write_bytecode = True

HERE = Path(__file__).resolve().parent
SRC_DIR = Path(os.environ.get("APPMSG_SOURCE_DIR") or HERE.parents[1])
BIN_DIR = Path(os.environ.get("APPMSG_BIN_DIR") or SRC_DIR / "build" / "examples")
PAGES = ("app-server", "app-client")


def help_options(prog):
    r = subprocess.run([str(BIN_DIR / prog), "--help"], capture_output=True, timeout=30,
                       text=True)
    assert r.returncode == 0, r.stderr
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", r.stdout, re.M))


def page_options(prog):
    text = (SRC_DIR / "doc" / f"{prog}.1").read_text(encoding="utf-8")
    # Options are written \-\-name in roff; those under .TP (the OPTIONS list) are the ones
    # documented, the rest are mentions.
    listed = set()
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line == ".TP":
            listed |= {"--" + m for m in re.findall(r"\\-\\-([a-z][a-z\\-]*)", lines[i + 1])}
    return {o.replace("\\-", "-") for o in listed}


class TestManPages(unittest.TestCase):
    def test_every_option_documented(self):
        for prog in PAGES:
            with self.subTest(prog=prog):
                self.assertEqual(page_options(prog), help_options(prog),
                                 f"doc/{prog}.1 and {prog} --help list different options")

    def test_groff_formats_them_cleanly(self):
        groff = shutil.which("groff")
        self.assertTrue(groff, "groff is not installed: bash scripts/deps.sh groff-base")
        for prog in PAGES + ("appmsg",):  # (appmsg's options are per command: formatting only)
            r = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z",
                                str(SRC_DIR / "doc" / f"{prog}.1")],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual((r.returncode, r.stderr), (0, ""), prog)


if __name__ == "__main__":
    unittest.main()
