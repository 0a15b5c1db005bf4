#!/usr/bin/env python3
"""Print full verification's cost as a ratio of the raw crypto measured in the same criterion
run (benches/verify.rs), and whether it is within the 1.3x target. A benchmark reports; it
exits 0 either way so `make bench` goes on to the load benchmark.

Usage: verify-ratio.py target/criterion/verify_1KiB_POST
"""
import json
import pathlib
import sys

TARGET = 1.3


def mean_ns(group: pathlib.Path, bench: str) -> float:
    estimates = json.loads((group / bench / "new" / "estimates.json").read_text())
    return float(estimates["mean"]["point_estimate"])


def main() -> int:
    group = pathlib.Path(sys.argv[1])
    raw = mean_ns(group, "raw_crypto")
    full = mean_ns(group, "full_verification")
    ratio = full / raw
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"raw crypto (SHA-256 of 1 KiB + one HMAC): {raw:8.1f} ns")
    print(f"full verification (parse, HMAC, replay):  {full:8.1f} ns")
    print(f"ratio {ratio:.2f}x, {verdict} the {TARGET}x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
