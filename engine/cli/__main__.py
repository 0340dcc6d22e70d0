"""``python -m engine.cli``: the ``flowbot`` command."""

import sys

from engine.cli.main import main

sys.exit(main())
