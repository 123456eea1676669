"""Name -> function tables for scores and strategies (image and region): a new one is a function and a decorator.

A strategy also files the scores it reads, so the scoring pass computes only those.
"""
from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def registrar(table: dict[str, F], needs_table: dict[str, list[str]] | None = None):
    """The decorator factory that files functions in `table` (and, for strategies, what each reads in
    `needs_table`)."""
    def register(name: str, needs: list[str] | None = None):
        if (needs_table is None) != (needs is None):
            raise TypeError(f"{name}: a strategy says which scores it reads (needs=[...]), a score does not")

        def wrap(fn: F) -> F:
            table[name] = fn
            if needs_table is not None:
                needs_table[name] = list(needs)
            return fn
        return wrap
    return register
