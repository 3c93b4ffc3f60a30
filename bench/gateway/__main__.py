"""`python -m bench.gateway [--quick] [--json] ...`"""

from __future__ import annotations

import sys

from bench.gateway.run import main

sys.exit(main())
