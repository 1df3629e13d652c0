"""How every ``xkd`` command prints its help: each option's default shown, descriptions kept as written."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: ...)`` to each option and keeps the line breaks of a description."""


def add_command(subparsers, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose one-line ``help_text`` is also its description unless a longer one is given."""
    return subparsers.add_parser(name, help=help_text, description=description or help_text,
                                 formatter_class=HelpFormatter)
