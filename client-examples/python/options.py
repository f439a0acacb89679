"""Command-line options the examples share: --url, --token, --room, --text.

An example adds its own options to the parser before `parse_args()`.
"""

from __future__ import annotations

import argparse


def parser(description: str | None, *, url: str, text: str) -> argparse.ArgumentParser:
    """The shared options, with this example's default server URL and text."""
    options = argparse.ArgumentParser(description=description)
    options.add_argument("--url", default=url)
    options.add_argument("--token", required=True)
    options.add_argument("--room", default="general")
    options.add_argument("--text", default=text)
    return options
