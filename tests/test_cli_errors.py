"""Bad input gets one clear message and exit code 2, never a traceback."""

from __future__ import annotations

import pytest

from nlbench.errors import ConfigError
from nlbench.spec import resolve_train_settings
from nlbench.spec.config import load_config, parse_set


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--method", "nosuch"], "unknown method 'nosuch'. Known methods: "),
        (["--dataset", "nosuch"], "unknown dataset 'nosuch'. Known datasets: "),
        (["--noise", "1.0"], "noise rate must be in [0, 1)"),
        (["--noise", "-0.2"], "noise rate must be in [0, 1)"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--noise-mode", "sideways"], "unknown noise mode 'sideways'"),
        (["--set", "methods.cct.lambda_maxx=0.8"], "unknown key methods.cct.lambda_maxx"),
        (["--set", "train.batchsize=3"], "unknown key train.batchsize"),
        (["--set", "methods.cct.lambda_max=high"], "methods.cct.lambda_max must be a float"),
        (["--set", "nonsense"], "--set expects key=value"),
        (["--pretrained", "/nonexistent/weights.pth"], "pretrained file '/nonexistent/weights.pth' does not exist"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_run_arguments_exit_2_with_a_clear_message(cli, args, expected):
    result = cli("run", *args)
    assert result.code == 2, result.err
    assert expected in result.err
    assert "Traceback" not in result.err


def test_known_names_are_listed_for_an_unknown_method(cli):
    result = cli("run", "--method", "nosuch")
    assert "cct" in result.err and "standard" in result.err


def test_malformed_benchmark_toml(cli, tmp_path):
    config = tmp_path / "benchmark.toml"
    config.write_text("[train\nepochs = 3\n")
    result = cli("run", "--config", str(config))
    assert result.code == 2 and "is not valid TOML" in result.err and str(config) in result.err


def test_unknown_keys_in_benchmark_toml_are_named(cli, tmp_path):
    config = tmp_path / "benchmark.toml"
    config.write_text("[train]\nepoch = 3\n")
    result = cli("run", "--config", str(config))
    assert result.code == 2 and "unknown key train.epoch" in result.err
    config.write_text("[trian]\nepochs = 3\n")
    result = cli("run", "--config", str(config))
    assert result.code == 2 and "unknown section or key 'trian'" in result.err


def test_missing_config_file(cli, tmp_path):
    result = cli("table", "--config", str(tmp_path / "nope.toml"))
    assert result.code == 2 and "does not exist" in result.err


def test_unknown_table_format(cli):
    result = cli("table", "--format", "pdf")
    assert result.code == 2 and "unknown format 'pdf'" in result.err


def test_set_values_are_read_as_toml():
    assert parse_set("methods.cct.lambda_max=0.8") == ("methods.cct.lambda_max", 0.8)
    assert parse_set("methods.cct.clip=true") == ("methods.cct.clip", True)
    assert parse_set("run.method=standard") == ("run.method", "standard")
    with pytest.raises(ConfigError):
        parse_set("=3")


def test_precedence_train_then_dataset_defaults_then_dataset_table_then_flags(tmp_path):
    config_file = tmp_path / "benchmark.toml"
    config_file.write_text("[train]\nimage_size = 224\nbatch_size = 100\n[datasets.synthfer]\nbatch_size = 50\n")
    config = load_config(config_file)

    class WithDefaults:
        train_defaults = {"image_size": 32, "batch_size": 64}

    settings = resolve_train_settings(config, WithDefaults, "synthfer", {})
    assert settings.image_size == 32  # the dataset's default beats [train]
    assert settings.batch_size == 50  # [datasets.synthfer] beats the dataset's default
    assert resolve_train_settings(config, WithDefaults, "synthfer", {"batch_size": 8}).batch_size == 8  # flags win
