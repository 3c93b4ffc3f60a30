"""`python -m bench.ingress [--quick] [--json] ...`"""

from __future__ import annotations

import sys

from bench.ingress.run import main

sys.exit(main())
