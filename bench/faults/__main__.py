"""`python -m bench.faults [--quick] [--json] [--only NAME ...]`"""

from __future__ import annotations

import sys

from bench.faults.runner import main

sys.exit(main())
