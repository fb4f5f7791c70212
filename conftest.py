"""Doctest namespace: docstring examples may use the public names directly."""

import os

import numpy as np
import pytest

import tftransfer


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update({name: getattr(tftransfer, name) for name in tftransfer.__all__})
    doctest_namespace.update(np=np, os=os, tft=tftransfer)
