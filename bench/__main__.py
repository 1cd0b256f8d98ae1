"""``python -m bench``: run fedmq's consumer benchmark (see ``bench.run``)."""

from bench.run import main

raise SystemExit(main())
