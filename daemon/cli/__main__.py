from plantwatch.daemon.cli.main import main

raise SystemExit(main())
