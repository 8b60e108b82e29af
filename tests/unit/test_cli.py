"""The command line teaches: every subcommand has a --help with examples."""

from __future__ import annotations

import pytest

from stream.cli import COMMANDS, main


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("broker", "worker", "demo", "export-encoder", "settings"):
        assert name in out
    assert "CROSSPROFILE_BROKER" in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"crossprofile {command}" in out
    assert len(out) > 200


def test_unknown_command_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["frobnicate"])
    assert "usage: crossprofile" in capsys.readouterr().err


def test_settings_command_lists_env_vars(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "CROSSPROFILE_BROKER" in out and "CROSSPROFILE_PARTITIONS" in out
    salt_line = next(line for line in out.splitlines() if "CROSSPROFILE_PERSON_SALT" in line)
    assert "**********" in salt_line, "secrets are masked"


def test_encoder_threads_auto_leaves_a_core_to_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream.settings import Settings

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert Settings().encoder_intra_threads() == 15
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert Settings().encoder_intra_threads() == 1
    assert Settings(encoder_threads=4).encoder_intra_threads() == 4
    assert Settings().signals_config()["max_items"] == 10_000
    topics, compacted = Settings(topic_prefix="x").topic_plan()
    assert "x.covisits" in topics and "x.covisits" not in compacted
