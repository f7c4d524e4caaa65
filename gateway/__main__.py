"""`python -m gateway …` is the same as `crm-gateway …`."""

from gateway.cli.main import main

raise SystemExit(main())
