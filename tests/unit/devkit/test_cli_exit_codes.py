"""The CLI's exit codes tell the user's set-up (3) from a bug of ours (4) and from a failed document (1)."""

from __future__ import annotations

import argparse

from ocr_devkit import cli


def test_no_aws_credentials_is_a_configuration_error_not_a_bug(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["submit", "s3://bucket/key.png", "--queue-url", "https://sqs.us-east-1.amazonaws.com/1/q"])
    assert code == cli.EXIT_CONFIGURATION
    assert "config.aws_credentials" in capsys.readouterr().err


def test_a_bug_of_ours_exits_4_with_one_line(monkeypatch, capsys):
    def broken(args: argparse.Namespace) -> int:
        raise KeyError("something we did not expect")

    class Parser:
        def parse_args(self, argv=None) -> argparse.Namespace:
            return argparse.Namespace(handler=broken)

    monkeypatch.setattr(cli, "build_parser", Parser)
    monkeypatch.delenv("OCR_PIPELINE_DEBUG", raising=False)
    assert cli.main([]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("error internal.error: KeyError") and err.count("\n") == 1


def test_a_dashscope_region_given_as_the_aws_region_is_refused_at_once(capsys):
    # `submit --region intl` used to try cloudformation.intl.amazonaws.com
    try:
        cli.main(["submit", "s3://bucket/key.png", "--stack", "my-ocr", "--region", "intl"])
    except SystemExit as exit_:
        assert exit_.code == cli.EXIT_USAGE
    assert "use --ocr-region intl" in capsys.readouterr().err


def test_the_ocr_region_has_one_name_everywhere():
    parser = cli.build_parser()
    for argv in (["recognize", "x.png"], ["run", "x.png", "--out", "o"], ["up"], ["estimate", "x.png"]):
        args = parser.parse_args([*argv, "--ocr-region", "cn"])
        assert args.region in ("cn", ["cn"]), argv


def test_the_old_region_flag_still_works_with_a_deprecation_warning(tmp_path, capsys):
    assert cli.main(["estimate", str(tmp_path / "missing.png"), "--region", "intl"]) in (0, 1)
    assert "--region is now --ocr-region" in capsys.readouterr().err
    cli.main(["estimate", str(tmp_path / "missing.png"), "--ocr-region", "intl"])
    assert "--region is now" not in capsys.readouterr().err
