"""``python -m goenhance_nb verify NOTEBOOK_OR_DIR``: check a notebook's results for CI.

Exit status: 0 when every result the lockfile lists is present with its recorded sha256 and
``goenhance_outputs/`` holds nothing else; 1 on drift (the report names each file); 2 on a usage
error or when there is no readable lockfile. Imports only what ``verify`` needs.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m goenhance_nb")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    v = sub.add_parser(
        "verify",
        help="re-hash the results a notebook's lockfile lists",
        description="Re-hash every result goenhance.lock.json lists; report missing, changed "
        "and extra files; exit 1 on drift.",
    )
    v.add_argument("path", nargs="?", default=".", help="a notebook, its folder, or the lockfile")
    args = parser.parse_args(argv)
    from goenhance_nb._errors import GoEnhanceError
    from goenhance_nb._repro import verify

    try:
        report = verify(args.path)
    except GoEnhanceError as exc:
        print(f"goenhance_nb verify: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in tests
    sys.exit(main())
