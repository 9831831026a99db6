"""The `lampchat` command's entry point: Ctrl+C while Python is still importing Lampchat (the
first few tenths of a second) ends it quietly instead of with a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    """Import the CLI and run it; an interrupt during the imports exits 130 in silence."""
    try:
        from app.cli import main as cli_main  # the whole CLI, imported under the guard
    except KeyboardInterrupt:
        return 130
    try:
        return cli_main()
    except KeyboardInterrupt:  # between the imports and the CLI's own signal handling
        return 130


if __name__ == "__main__":
    sys.exit(main())
