"""`python -m trajviz.cli` runs the command line."""

import sys

from trajviz.cli import main

sys.exit(main())
