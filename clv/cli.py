"""What the command-line entry points share: one-line errors with exit code 2, and date options."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import NoReturn


class OptionError(Exception):
    """A bad command-line option: reported as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date (YYYY-MM-DD)") from None
