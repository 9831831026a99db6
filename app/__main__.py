"""`python -m app` runs the `lampchat` command."""

from app.launch import main

raise SystemExit(main())
