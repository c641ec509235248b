from spoolgate.cli import main

raise SystemExit(main())
