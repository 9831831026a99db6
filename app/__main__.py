"""`python -m app` runs the `lampchat` command."""

from app.cli import main

raise SystemExit(main())
