"""pitstop: maintenance orchestrator and runbook engine on Prefect 3."""

import os as _os

# pydantic looks for plugins by scanning the metadata of every installed distribution the first time a
# model is built (tens of ms with Prefect's dependency tree, paid by every CLI call and fleet worker).
# pitstop uses none; an operator who wants one (e.g. an observability plugin) sets this variable.
_os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

__version__ = "0.1.0"
