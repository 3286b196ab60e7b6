"""``python -m replaylab``: the command line, as the ``replaylab`` script runs it."""

import sys

from replaylab.cli import main

sys.exit(main())
