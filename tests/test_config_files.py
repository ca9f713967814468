"""The one config resolution rule and YAML reader (andes_gym/config_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from andes_gym.config_files import (
    CONFIG_KINDS,
    ConfigError,
    available_configs,
    packaged_config_dir,
    read_yaml,
    resolve_config,
)


@pytest.mark.parametrize("kind", CONFIG_KINDS)
def test_every_kind_ships_presets_inside_the_package(kind: str) -> None:
    directory = packaged_config_dir(kind)
    assert directory.is_relative_to(Path(__file__).parents[1] / "andes_gym")
    assert sorted(directory.glob("*.yaml"))
    for path in directory.glob("*.yaml"):
        read_yaml(path)


def test_resolution_order_path_then_cwd_configs_then_packaged(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    packaged = resolve_config("engines", "cpu_tiny")
    assert packaged == packaged_config_dir("engines") / "cpu_tiny.yaml"
    own = tmp_path / "configs" / "engines" / "cpu_tiny.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("name: mine\n")
    assert resolve_config("engines", "cpu_tiny") == Path.cwd() / "configs/engines/cpu_tiny.yaml"
    explicit = tmp_path / "elsewhere.yaml"
    explicit.write_text("name: other\n")
    assert resolve_config("engines", str(explicit)) == explicit
    (tmp_path / "configs" / "engines" / "only_mine.yaml").write_text("name: x\n")
    assert "only_mine" in available_configs("engines")
    assert "llama7b_a100" in available_configs("engines")


def test_an_unknown_name_lists_what_is_available(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no workloads config named 'nope'") as info:
        resolve_config("workloads", "nope")
    assert "bursty_2x" in str(info.value)
    with pytest.raises(FileNotFoundError, match="not found: missing.yaml"):
        resolve_config("workloads", "missing.yaml")
    with pytest.raises(ValueError, match="config kind"):
        resolve_config("models", "x")


@pytest.mark.parametrize(
    ("content", "needle", "line"),
    [
        (b"a: 1\nb: [1, 2\n", "invalid YAML", 3),
        (b"a: 1\nb:\n  c: 1\n  c: 2\n", "key 'c' appears twice", 4),
        (b"a: 1\nb: \xff\xfe\n", "not UTF-8", 2),
        (b"# only a comment\n", "empty", None),
    ],
)
def test_bad_yaml_names_the_file_and_line(tmp_path, content, needle, line) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=needle) as info:
        read_yaml(path, "suite")
    assert info.value.source == str(path)
    assert info.value.line == line
    assert str(info.value).startswith(str(path))


def test_a_byte_order_mark_is_dropped(tmp_path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffname: x\n".encode())
    assert read_yaml(path) == {"name": "x"}
