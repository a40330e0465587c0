"""``python -m pushgate`` runs the command-line interface."""

from pushgate.cli import main

raise SystemExit(main())
