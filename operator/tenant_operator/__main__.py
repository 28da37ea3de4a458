from tenant_operator.cli import main

raise SystemExit(main())
