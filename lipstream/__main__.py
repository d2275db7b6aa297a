from lipstream.cli import main

raise SystemExit(main())
