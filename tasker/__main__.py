"""`python -m tasker` runs the command line."""

import sys

from tasker.cli import main

sys.exit(main())
