"""``python -m tpslab`` is the ``tpslab`` command."""

import sys

from tpslab.cli import main

sys.exit(main())
