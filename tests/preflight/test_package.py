"""The preflight package: `gradguard.preflight.check` stays the function (no submodule shadows it)."""

from __future__ import annotations

import importlib
import pkgutil

import gradguard as gg
import gradguard.preflight


def test_check_is_the_function_after_every_submodule_is_imported() -> None:
    for mod in pkgutil.iter_modules(gradguard.preflight.__path__):
        importlib.import_module(f"gradguard.preflight.{mod.name}")
    assert callable(gradguard.preflight.check)
    assert gradguard.preflight.check.__module__ == "gradguard.preflight.checking"
    assert gg.check is gradguard.preflight.check
