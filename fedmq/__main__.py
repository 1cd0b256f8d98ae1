"""``python -m fedmq``: the ``fedmq`` command."""

from fedmq.cli import main

raise SystemExit(main())
