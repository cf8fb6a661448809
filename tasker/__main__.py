"""`python -m tasker` runs the command line."""

import sys

from tasker.cli.main import main

sys.exit(main())
