"""Shared building blocks of the config models: strict models, names, identifiers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# A PostgreSQL identifier exactly as named in the catalog: mixed case, spaces, '$' and '-' included
# (pitstop quotes every identifier through psycopg.sql). Quotes, semicolons, operators, path separators
# and control characters are refused: such a name is far likelier an injection attempt than a table,
# and names also become storage keys of row archives.
Identifier = Annotated[str, Field(pattern=r"^[^\W\d][\w $-]{0,62}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Percent = Annotated[str, Field(pattern=r"^[0-9]{1,3}(\.[0-9]+)?%$")]


def _check_tz(v: str | None) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if v is not None:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r} (expected an IANA name such as Europe/Berlin)") from None
    return v
