"""`python -m bench.orchestrator [--quick] [--rate 50] [--seconds 30] [--no-local-start]`"""

from __future__ import annotations

import sys

from bench.orchestrator.run import main

sys.exit(main())
