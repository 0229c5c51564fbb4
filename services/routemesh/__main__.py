"""python -m routemesh."""

import sys

from routemesh.cli import main

sys.exit(main())
