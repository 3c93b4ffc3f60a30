"""`python -m callbridge.services.webhook_ingress [flags]`: the `callbridge ingress` command on its
own (useful where the console script is not installed; same flags, same --help)."""

from __future__ import annotations

import argparse
import sys

from callbridge.services.webhook_ingress.cli import DESCRIPTION, EPILOG, add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m callbridge.services.webhook_ingress",
                                     description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
