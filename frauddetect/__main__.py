"""Allows ``python -m frauddetect``."""

from frauddetect.cli import main

raise SystemExit(main())
