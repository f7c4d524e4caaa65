"""`python -m gateway …` is the same as `crm-gateway …`."""

from gateway.cli import main

raise SystemExit(main())
