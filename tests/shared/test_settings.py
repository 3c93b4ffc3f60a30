"""Settings loading: a renamed variable is refused by name, never dropped in silence."""

from __future__ import annotations

import pytest

from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.shared.settings import load_settings, renamed_variables_in_use


def test_old_gateway_names_are_named_with_their_new_name() -> None:
    found = renamed_variables_in_use(
        GatewaySettings, {"idle_timeout_s": "3", "GATEWAY_DRAIN_TIMEOUT_S": "5"})
    assert found == ["  IDLE_TIMEOUT_S was renamed GATEWAY_IDLE_TIMEOUT_S: "
                     "set GATEWAY_IDLE_TIMEOUT_S instead"]


def test_every_renamed_variable_points_at_a_real_setting() -> None:
    fields = {name.upper() for name in GatewaySettings.model_fields}
    assert GatewaySettings.RENAMED_VARIABLES
    assert set(GatewaySettings.RENAMED_VARIABLES.values()) <= fields
    assert not set(GatewaySettings.RENAMED_VARIABLES) & fields


def test_loading_with_an_old_name_exits_and_says_what_to_set(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DRAIN_TIMEOUT_S", "5")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(SystemExit) as exit_info:
        load_settings(GatewaySettings)
    assert exit_info.value.code == 2
    assert "set GATEWAY_DRAIN_TIMEOUT_S instead" in capsys.readouterr().err


def test_help_lists_each_setting_with_its_default_from_the_class() -> None:
    from callbridge.services.cli import build_parser

    parser = build_parser()
    gateway = next(action for action in parser._subparsers._group_actions  # type: ignore[union-attr]
                   ).choices["gateway"]
    text = gateway.format_help()
    assert "@settings" not in text
    for name in GatewaySettings.model_fields:
        assert name.upper() in text, name
    default = GatewaySettings.model_fields["gateway_drain_timeout_s"].default
    assert f"GATEWAY_DRAIN_TIMEOUT_S ({default})" in text
