"""``python -m sig_gate_client``: see :mod:`sig_gate_client.cli`."""

import sys

from .cli import main

sys.exit(main())
