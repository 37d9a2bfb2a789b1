"""The public surface: exported names stay sorted and deliberate, docs run."""

from __future__ import annotations

import doctest
import importlib

import pytest

import flatstate

PUBLIC = [
    "Draft",
    "FrozenMap",
    "SessionEntry",
    "SessionStore",
    "Snapshot",
    "StoreStats",
    "errors",
    "open_store",
]


def test_exported_members() -> None:
    assert flatstate.__all__ == sorted(flatstate.__all__)
    assert flatstate.__all__ == PUBLIC
    for name in PUBLIC:
        assert hasattr(flatstate, name)


def test_every_error_derives_from_the_root_and_a_builtin() -> None:
    from flatstate import errors

    ours = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, Exception)
        and cls.__module__ == errors.__name__
    ]
    assert len(ours) >= 9
    for cls in ours:
        assert issubclass(cls, errors.FlatstateError)
        if cls is not errors.FlatstateError:
            leaves = [b for b in cls.__mro__ if b.__module__ == "builtins"]
            assert leaves[0] not in (Exception, BaseException), cls


def test_errors_survive_pickling() -> None:
    import pickle

    from flatstate.errors import EntryTooLarge, LockTimeout

    for err in (EntryTooLarge("agent:main:x", 10, 5), LockTimeout("/p.lock", 1.0, 42)):
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and str(copy) == str(err) and copy.__dict__ == err.__dict__


@pytest.mark.parametrize(
    "module",
    [
        "flatstate.frozen",
        "flatstate.keys",
        "flatstate.model",
        "flatstate._open",
        "flatstate.locks",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
