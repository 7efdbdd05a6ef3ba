"""Hostile values: shell and SQL injection payloads. ``{f}`` becomes a canary file path, ``{t}`` the
canary table; a payload that ever executes creates the file or drops/changes the table."""

from __future__ import annotations

SHELL = [
    "; touch {f}", "&& touch {f}", "|| touch {f}", "| touch {f}", "$(touch {f})", "`touch {f}`",
    "\ntouch {f}", "'; touch {f}; '", "\"; touch {f}; \"", "$(touch${IFS}{f})", "& touch {f} &", "> {f}",
    ">> {f}", "< /etc/hostname > {f}", "$(printf x > {f})", "';touch {f};'", "a\";touch {f};\"",
    "\\\"; touch {f}", "\r\ntouch {f}", "$((1))$(touch {f})", "<(touch {f})", ">(touch {f})",
    "x; sh -c 'touch {f}'", "x; python3 -c \"open('{f}','w')\"", "$'\\x3b'touch {f}", "~; touch {f}",
    "*; touch {f}", "x\\; touch {f}", "{a,b}; touch {f}", "$(IFS=_;cmd=touch_{f};$cmd)",
    "-o ProxyCommand=touch {f}", "--output={f}",
]

SQL = [
    "x'; DROP TABLE {t}; --", "x'); DROP TABLE {t}; --", "' OR 1=1; DROP TABLE {t}; --",
    "\"; DROP TABLE {t}; --", "1; DROP TABLE {t}", "$$; DROP TABLE {t}; $$", "x\\'; DROP TABLE {t}; --",
    "'||(SELECT 1)||'; DROP TABLE {t}--", "E'\\x27; DROP TABLE {t}; --", "%s; DROP TABLE {t}",
    "%(x)s'; DROP TABLE {t}", "{}'); DROP TABLE {t};--", "'; COPY (SELECT 1) TO PROGRAM 'touch {f}'; --",
    "x' UNION SELECT NULL; DROP TABLE {t}; --", "/**/'; DROP/**/TABLE/**/{t};--", "'; TRUNCATE {t}; --",
    "'; DELETE FROM {t}; --", "'; ALTER TABLE {t} RENAME TO gone; --", "'\nDROP TABLE {t};\n--",
    "; DROP TABLE {t} CASCADE", "x'::text; DROP TABLE {t}; --", "\u02bc; DROP TABLE {t}; --",
    "paid' OR 'a'='a", "'; INSERT INTO {t} VALUES (2); --",
]

TEMPLATES = SHELL + SQL
TABLE = "pitstop_canary"


def payloads(canary_dir: str, prefix: str = "") -> list[str]:
    """Every template, each aimed at its own canary file ``<canary_dir>/<prefix><i>``."""
    return [t.replace("{f}", f"{canary_dir}/{prefix}{i}").replace("{t}", TABLE) for i, t in enumerate(TEMPLATES)]
