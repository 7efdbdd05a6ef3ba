"""A channel's URL in a Prefect Secret block is read by the reader its caller hands in (the CLI and the flows
pass the Prefect adapter's): the notification layer never imports Prefect."""

from __future__ import annotations

import pytest

from pitstop.config.notifications import ChannelConfig
from pitstop.errors import ConfigError
from pitstop.notify.channels import AppriseChannel

URL = "json://hooks.example.com/0123456789abcdef"


def test_the_secret_block_is_read_by_the_reader_handed_in() -> None:
    asked: list[str] = []

    def read(name: str) -> str:
        asked.append(name)
        return URL

    ch = AppriseChannel("ops", ChannelConfig(kind="apprise", secret_block="ops-url"), read_secret=read)
    assert ch.url() == URL and ch.url() == URL and asked == ["ops-url"]  # read once, on first use


def test_without_a_reader_or_with_a_failing_one_the_channel_says_which_block() -> None:
    cfg = ChannelConfig(kind="apprise", secret_block="ops-url")
    with pytest.raises(ConfigError, match="'ops-url' could not be read"):
        AppriseChannel("ops", cfg).url()

    def broken(name: str) -> str:
        raise RuntimeError(f"{URL} leaked")

    with pytest.raises(ConfigError, match=r"could not be read \(RuntimeError\)") as info:
        AppriseChannel("ops", cfg, read_secret=broken).url()
    assert URL not in str(info.value)
