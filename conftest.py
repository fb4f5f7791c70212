"""Doctest namespace (docstring examples may use the public names directly),
and the ``extended`` marker: tests that repeat, at full size, what faster
tests of the default run already check. They are skipped (and listed as
skipped) unless ``--extended`` is given or ``-m`` names them."""

import os

import numpy as np
import pytest

import tftransfer


def pytest_addoption(parser):
    parser.addoption("--extended", action="store_true",
                     help="also run the tests marked `extended` (full-size runs; several minutes)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--extended") or "extended" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(
        reason="extended: run with `python -m pytest --extended` (or `-m extended`)")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update({name: getattr(tftransfer, name) for name in tftransfer.__all__})
    doctest_namespace.update(np=np, os=os, tft=tftransfer)
