"""``python -m sig_gate_client sign``: print the signature headers for one request.

The same command line and output as ``sig-gate sign`` (one ``Name: value`` line per header,
in order), so a shell script or an operator debugging a 401 can use either and compare.
Exit codes follow the gate's: 0 success, 2 usage or configuration error (the message names
the offending variable or flag), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import __version__
from .config import GateConfigError
from .signer import GateSigner, SigningInputError

EXIT_USAGE = 2
PROG = "sig-gate-client"

# Which flag carries each value the signer may refuse.
_FLAGS = {"method": "--method", "target": "--path", "timestamp": "--timestamp", "nonce": "--nonce"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; argparse exits 2 on usage errors, matching the gate."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Sign requests for sig-gate from the environment: version 1 from INTERSERVICE_HMAC_*, "
            "version 2 from GATE_SIGNING_KEY_ID, GATE_SIGNING_KEY_FILE and GATE_AUDIENCE."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sign = commands.add_parser(
        "sign",
        help="print the signature headers for one request",
        description=(
            "Print one 'Name: value' line per header to send. Version 1 reads "
            "INTERSERVICE_HMAC_SECRET (or _FILE), INTERSERVICE_HMAC_KEY_ID, "
            "INTERSERVICE_HMAC_SECRET_PREV (or _FILE), INTERSERVICE_HMAC_KEY_ID_PREV and "
            "TOOL_GATE_DUAL_SIGN. Version 2, selected by GATE_SIGNING_KEY_ID, reads "
            "GATE_SIGNING_KEY_ID, GATE_SIGNING_KEY_FILE, GATE_SIGNING_ALG (hmac-sha256 or ed25519), "
            "GATE_AUDIENCE, and GATE_OBSERVE_KEY_ID with GATE_OBSERVE_KEY_FILE (Ed25519)."
        ),
    )
    sign.add_argument("--method", required=True, help="HTTP method exactly as sent, e.g. POST")
    sign.add_argument(
        "--path", required=True, help="request target exactly as sent: raw path plus optional ?query"
    )
    sign.add_argument(
        "--body-file", help="file holding the exact body bytes ('-' reads standard input; default: empty body)"
    )
    sign.add_argument("--timestamp", help="Unix seconds to sign with (default: now); for tests and debugging")
    sign.add_argument("--nonce", help="nonce to sign with (default: random); for tests and debugging")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line and return the exit code."""
    args = build_parser().parse_args(argv)
    if args.command != "sign":  # pragma: no cover - argparse only allows known commands
        raise AssertionError(args.command)

    body = b""
    if args.body_file == "-":
        body = sys.stdin.buffer.read()
    elif args.body_file is not None:
        try:
            with open(args.body_file, "rb") as handle:
                body = handle.read()
        except OSError as err:
            print(f"{PROG}: --body-file: cannot read {args.body_file}: {err.strerror or err}", file=sys.stderr)
            return EXIT_USAGE

    try:
        signer = GateSigner.from_env()
    except GateConfigError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        headers = signer.sign(args.method, args.path, body, timestamp=args.timestamp, nonce=args.nonce)
    except SigningInputError as err:
        print(f"{PROG}: {_FLAGS.get(err.field, err.field)}: {err.problem}", file=sys.stderr)
        return EXIT_USAGE

    sys.stdout.write("".join(f"{name}: {value}\n" for name, value in headers.items()))
    return 0
