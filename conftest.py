"""Doctest namespace for the docstring examples in optstrat and the adapters."""

import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import optstrat

    for name in optstrat.__all__:
        doctest_namespace[name] = getattr(optstrat, name)
