from dlf.cli import main

raise SystemExit(main())
