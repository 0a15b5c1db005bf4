#!/usr/bin/env python3
"""Print full verification's cost as a ratio of the raw crypto measured in the same criterion
run (crates/gate/benches/verify.rs), for each group given, and whether it is within its target:
1.3x for version 1 HMAC (`verify_1KiB_POST`), 1.1x for version 2 Ed25519
(`verify_ed25519_v2_1KiB_POST`, where the signature check dominates). A benchmark reports; it
exits 0 either way so `make bench` goes on to the load benchmark.

Usage: verify-ratio.py target/criterion/verify_1KiB_POST [target/criterion/verify_ed25519_v2_1KiB_POST]
"""
import json
import pathlib
import sys

TARGETS = {"verify_1KiB_POST": (1.3, "SHA-256 of 1 KiB + one HMAC"),
           "verify_ed25519_v2_1KiB_POST": (1.1, "SHA-256 of 1 KiB + one Ed25519 verify")}


def mean_ns(group: pathlib.Path, bench: str) -> float:
    estimates = json.loads((group / bench / "new" / "estimates.json").read_text())
    return float(estimates["mean"]["point_estimate"])


def main() -> int:
    for arg in sys.argv[1:]:
        group = pathlib.Path(arg)
        target, raw_what = TARGETS[group.name]
        raw = mean_ns(group, "raw_crypto")
        full = mean_ns(group, "full_verification")
        ratio = full / raw
        verdict = "within" if ratio <= target else "OVER"
        print(f"{group.name}:")
        print(f"  raw crypto ({raw_what}): {raw:8.1f} ns")
        print(f"  full verification (parse, verify, replay): {full:8.1f} ns")
        print(f"  ratio {ratio:.2f}x, {verdict} the {target}x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
