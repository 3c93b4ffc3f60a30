"""Faithful stand-ins for the Infobip Calls platform and the OpenAI Realtime API.

The demo, the tests and the benchmarks all drive callbridge through these; they import
`shared/` like any service and follow ../shared/reference/ to the letter.
"""

from pathlib import Path

#: Speech clips the simulators play (see assets/README.md for their text).
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
