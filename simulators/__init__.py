"""Faithful stand-ins for the Infobip Calls platform and the OpenAI Realtime API.

The demo, the tests and the benchmarks all drive callbridge through these. They are
witnesses, not mirrors: what is valid is decided from the published artifacts (Infobip's
Voice OpenAPI document in `infobip/spec/`, the official `openai` package's types), never from
the project's protocol modules; from `shared/` they take only audio and logging utilities
(docs/protocol-assumptions.md lists the sources).
"""

from pathlib import Path

#: Speech clips the simulators play (see assets/README.md for their text).
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
