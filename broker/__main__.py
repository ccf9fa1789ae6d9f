"""`python -m broker` runs the keybroker command line."""

from broker.cli import main

raise SystemExit(main())
