"""`python -m weightshare.cli ...` runs the command line."""

import sys

from .core import main

sys.exit(main())
