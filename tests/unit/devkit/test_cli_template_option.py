"""`run` and `up` take `-t/--template`, as the SAM CLI does; without it they use the project's template.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocr_devkit import cli
from ocr_devkit.run import TEMPLATE, RunOptions


@pytest.mark.parametrize("command", [["run", "samples", "--out", "out"], ["up"]])
def test_the_default_template_is_the_projects(command):
    args = cli.build_parser().parse_args(command)
    assert args.template == TEMPLATE and TEMPLATE.name == "template.yaml" and TEMPLATE.is_file()


@pytest.mark.parametrize("flag", ["-t", "--template"])
@pytest.mark.parametrize("command", [["run", "samples", "--out", "out"], ["up"]])
def test_a_template_can_be_named(tmp_path, command, flag):
    template = tmp_path / "other.yaml"
    template.write_text("Resources: {}\n", encoding="utf-8")
    args = cli.build_parser().parse_args([*command, flag, str(template)])
    assert args.template == template


def test_a_missing_template_is_a_command_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "samples", "--out", str(tmp_path / "out"), "-t", str(tmp_path / "nope.yaml")])
    assert exited.value.code == 2
    assert "no such template" in capsys.readouterr().err


def test_run_hands_the_template_to_the_local_stack(tmp_path, monkeypatch):
    # Given: a run that records the options it would start the stack with
    seen: list[RunOptions] = []

    def fake_run_pipeline(options: RunOptions, **_: object) -> object:
        seen.append(options)
        raise KeyboardInterrupt  # stop before any stack starts

    monkeypatch.setattr("ocr_devkit.run.run_pipeline", fake_run_pipeline)
    template = tmp_path / "template.yaml"
    template.write_text("Resources: {}\n", encoding="utf-8")

    # When
    code = cli.main(["run", str(tmp_path), "--out", str(tmp_path / "out"), "-t", str(template), "--json"])

    # Then
    assert code == 130
    assert [options.template for options in seen] == [Path(template)]
