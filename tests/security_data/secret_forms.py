"""Hostile secrets and every encoded form in which one can reach an output (the scanner's needles)."""

from __future__ import annotations

import base64
import html
import json
import shlex
from urllib.parse import quote, quote_plus

from hypothesis import strategies as st

from pitstop.redact import MIN_FORM

SPECIALS = "\"\\'\n\t %+/&=?#$`;|<>{}[]()*~^@!,:"
UNICODE = "üßéÆø€中文😀\u00a0\u202e"


def hostile(ascii_only: bool = False, alphabet: str | None = None, min_size: int = 12,
            max_size: int = 24) -> st.SearchStrategy[str]:
    """Secrets made of quotes, backslashes, newlines, '%', '+', spaces (and non-ASCII unless ``ascii_only``),
    with at least three of those and ``min_size`` visible characters."""
    chars = alphabet or (SPECIALS + ("" if ascii_only else UNICODE))
    letters = st.characters(min_codepoint=48, max_codepoint=122).filter(str.isalnum)
    return st.text(st.sampled_from(list(chars)) | letters, min_size=min_size, max_size=max_size).filter(
        lambda s: len(s.strip()) >= min_size and sum(c in chars for c in s) >= 3)


def forms(secret: str) -> dict[str, str]:
    """Named forms of ``secret``; base64 at alignment 1 and 2 is the part that depends on the secret alone."""
    b = secret.encode()

    def mid(prefix: bytes) -> str:
        data = prefix + b
        return base64.b64encode(data[: len(data) // 3 * 3]).decode()[{0: 0, 1: 2, 2: 3}[len(prefix)]:]

    out = {"raw": secret, "json": json.dumps(secret)[1:-1], "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
           "url": quote(secret, safe=""), "url-path": quote(secret), "url-plus": quote_plus(secret),
           "shell": shlex.quote(secret), "conninfo": secret.replace("\\", "\\\\").replace("'", "\\'"),
           "html": html.escape(secret), "repr": repr(secret)[1:-1], "repr-bytes": repr(b)[2:-1],
           "b64": base64.b64encode(b).decode(), "b64-url": base64.urlsafe_b64encode(b).decode(),
           "b64-nopad": base64.b64encode(b).decode().rstrip("="), "b64-at-1": mid(b"x"), "b64-at-2": mid(b"xy")}
    return {k: v for k, v in out.items() if len(v) >= MIN_FORM or k == "raw"}


# Steps that print a secret (the environment variable named in argv[1]) in one group of forms (argv[2]):
# a group's raw output stays under the 500 characters a report keeps of a command, so a form that escapes
# redaction is still there to be found.
GROUPS = 4
PRINT_FORMS = r"""
import base64, html, json, os, shlex, sys
from urllib.parse import quote, quote_plus
s = os.environ[sys.argv[1]]
b = s.encode()
mid = lambda p: base64.b64encode(p + b).decode()
groups = [(s, json.dumps(s), json.dumps(s, ensure_ascii=False), json.dumps({"pw": s})),
          (quote(s, safe=""), quote(s), quote_plus(s), shlex.quote(s)),
          (s.replace("\\", "\\\\").replace("'", "\\'"), html.escape(s), repr(s), repr(b)),
          (base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode(), mid(b"x"), mid(b"xy"))]
for form in groups[int(sys.argv[2])]:
    print("form:", form)
"""

# A step that fails like a connection would: its error names a DSN holding the secret, and its stderr ends
# 9 characters into the secret once cut to the 500-character tail a report keeps.
FAIL_WITH_DSN = r"""
import os, sys
from urllib.parse import quote
s = os.environ[sys.argv[1]]
sys.stderr.write("psql: error: connection to server failed: postgresql://app:%s@db.internal:5432/shop "
                 "(password='%s')\n" % (quote(s, safe=""), s.replace("\\", "\\\\").replace("'", "\\'")))
sys.stderr.write(s + "y" * 491)
sys.exit(3)
"""
