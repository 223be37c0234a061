"""`python -m edge.cli`."""

from edge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
