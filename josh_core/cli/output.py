"""The `josh` commands' printing helpers: josh_core/console.py (kept importable from here)."""

from josh_core.console import error_console, fail, plain, styled, warn

__all__ = ["error_console", "fail", "plain", "styled", "warn"]
