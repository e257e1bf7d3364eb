"""The models side's folders (registry, encoder, embedding cache) are read from the environment once,
by an entry point, and passed in: a running registry does not follow a later change of the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import Registry
from models.settings import (
    DEFAULT_CACHE_DIR,
    DEFAULT_ENCODER_DIR,
    DEFAULT_REGISTRY,
    ModelSettings,
    current,
    in_scope,
)

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("XIAOBAO_REGISTRY", "XIAOBAO_ENCODER", "XIAOBAO_CACHE")


def test_the_variables_and_their_defaults(monkeypatch, tmp_path):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    s = ModelSettings.from_env()
    assert (s.registry, s.encoder, s.cache) == (ROOT / "models" / "registry", ROOT / "models" / "encoder_e5",
                                                ROOT / "var" / "embeddings")
    assert s == ModelSettings() == ModelSettings(DEFAULT_REGISTRY, DEFAULT_ENCODER_DIR, DEFAULT_CACHE_DIR)
    monkeypatch.setenv("XIAOBAO_REGISTRY", str(tmp_path / "reg"))
    monkeypatch.setenv("XIAOBAO_ENCODER", str(tmp_path / "enc"))
    monkeypatch.setenv("XIAOBAO_CACHE", "")  # empty counts as unset
    assert ModelSettings.from_env() == ModelSettings(tmp_path / "reg", tmp_path / "enc", DEFAULT_CACHE_DIR)
    assert ModelSettings.from_env({"XIAOBAO_CACHE": str(tmp_path / "c")}) == ModelSettings(cache=tmp_path / "c")


def test_explicit_values_win_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XIAOBAO_REGISTRY", str(tmp_path / "from-env"))
    monkeypatch.delenv("XIAOBAO_CACHE", raising=False)
    s = ModelSettings.from_env(registry=tmp_path / "given", cache=None)  # None: not given
    assert s.registry == tmp_path / "given" and s.cache == DEFAULT_CACHE_DIR
    with pytest.raises(TypeError, match="unknown model settings"):
        ModelSettings.from_env(registery=tmp_path)
    assert Registry(tmp_path / "mine", s).root == tmp_path / "mine"  # the folder given, not the settings'
    assert Registry.from_settings(s).root == tmp_path / "given"


def test_a_running_registry_keeps_its_root_when_the_variable_changes(monkeypatch, tmp_path):
    monkeypatch.setenv("XIAOBAO_REGISTRY", str(tmp_path / "first"))
    registry = Registry.from_settings(ModelSettings.from_env())
    monkeypatch.setenv("XIAOBAO_REGISTRY", str(tmp_path / "second"))
    with registry.locked():  # what a promotion does first: creates the folder and takes its lock
        pass
    assert registry.root == tmp_path / "first" and (tmp_path / "first" / ".lock").is_file()
    assert not (tmp_path / "second").exists() and registry.versions() == [] and registry.current() is None


def test_library_code_never_reads_the_environment(monkeypatch, tmp_path):
    """What library code sees is what an entry point (or a test fixture) put in scope, else the
    built-in defaults; setting a variable changes nothing for it."""
    before = current()
    for name in NAMES:
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    assert current() == before and Registry(tmp_path / "r").settings == before
    assert tmp_path not in (before.registry.parent, before.encoder.parent, before.cache.parent)
    given = ModelSettings.from_env()
    with in_scope(given):
        assert current() == given and Registry(tmp_path / "r").settings == given
        with in_scope(given.but(cache=tmp_path / "inner")):
            assert current().cache == tmp_path / "inner"
        assert current() == given
    assert current() == before
