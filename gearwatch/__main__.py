from gearwatch.cli import main

raise SystemExit(main())
