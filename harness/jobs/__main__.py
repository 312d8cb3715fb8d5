"""``python -m harness.jobs job ...``: the entrypoint a submitted Ray job runs (see :mod:`harness.jobs.wrapper`)."""

import sys

from harness.jobs.wrapper import main

sys.exit(main())
