"""Built-in synthetic tasks: seeded, any size, nothing downloaded."""

from __future__ import annotations

from faithcb.tasks.arithmetic import control_examples, make_examples, make_problems, shortcut_examples

__all__ = ["control_examples", "make_examples", "make_problems", "shortcut_examples"]
