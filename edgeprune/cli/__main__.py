"""`python -m edgeprune.cli` runs the CLI."""
from edgeprune.cli.main import main

raise SystemExit(main())
