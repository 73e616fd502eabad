#!/usr/bin/env python3
"""Regenerates tests/fixtures/py_random/expected.json: outputs of CPython's `random.Random` for
integer seeds, which tests/unit/py_random_test.cpp requires mor::core::PyRandom to reproduce exactly
(the few-shot sampling of lm-evaluation-harness: random.Random(1234).sample(docs, k), ...).

Every case starts from a fresh random.Random(seed). Floats are written as repr() strings (they
round-trip exactly through strtod). The semantics are CPython 3.11's; run it with Debian 12's
interpreter:
  /usr/bin/python3 tests/tools/make_py_random_fixtures.py
"""
import json
import pathlib
import random
import sys

SEEDS = [0, 1, 1234, 42, 2**40 + 7, -5, 2**100 + 3]
BITS = [1, 7, 32, 33, 64]
BELOW = [1, 2, 3, 7, 1000, 2**31, 2**53]
# (n, k): sample(range(n), k). setsize is 21 for k <= 5 and 21 + 4**ceil(log(3k, 4)) above (85 for
# k = 6..21, 277 for 25, 1045 for 200), so (22, 5), (86, 6), (1000, 6), (100000, 25) take the set
# branch and (21, 5), (85, 6), (30, 6), (22, 21), (1000, 200), (10, *) the pool one.
SAMPLES = [(10, 3), (10, 10), (50, 6), (1000, 6), (5, 0), (100000, 25), (22, 21), (30, 6),
           (22, 5), (21, 5), (85, 6), (86, 6), (1000, 200)]
SHUFFLES = [0, 1, 2, 10, 100]
DRAWS = 10


def words(seed):
    """Little-endian 32-bit words of |seed| (what random_seed feeds init_by_array)."""
    n, out = abs(seed), []
    while True:
        out.append(n & 0xFFFFFFFF)
        n >>= 32
        if not n:
            return out


def case(seed):
    R = lambda: random.Random(seed)  # noqa: E731
    out = {"seed": str(seed), "words": words(seed)}
    r = R()
    out["random"] = [repr(r.random()) for _ in range(DRAWS)]
    out["getrandbits"] = {}
    for k in BITS:
        r = R()
        out["getrandbits"][str(k)] = [r.getrandbits(k) for _ in range(DRAWS)]
    out["randrange"] = {}
    for n in BELOW:
        r = R()
        out["randrange"][str(n)] = [r.randrange(n) for _ in range(DRAWS)]
    out["sample"] = []
    for n, k in SAMPLES:
        out["sample"].append({"n": n, "k": k, "result": R().sample(range(n), k)})
    out["shuffle"] = []
    for n in SHUFFLES:
        x = list(range(n))
        R().shuffle(x)
        out["shuffle"].append({"n": n, "result": x})
    r = R()
    out["randint_0_9"] = [r.randint(0, 9) for _ in range(20)]
    # One generator used the way lm-evaluation-harness does: repeated samples, then other calls.
    r = R()
    chained = {"samples": [r.sample(range(1000), 6) for _ in range(5)]}
    x = list(range(20))
    r.shuffle(x)
    chained["shuffle"] = x
    chained["choice"] = [r.choice(range(7)) for _ in range(5)]
    chained["randrange_5_17"] = [r.randrange(5, 17) for _ in range(5)]
    chained["random"] = repr(r.random())
    out["chained"] = chained
    state = R().getstate()[1]
    out["state_head"] = list(state[:8]) + [state[-1]]  # mt[0..7] and the index after seeding
    return out


def main():
    fixture = {
        "python": sys.version.split()[0],
        "cases": [case(s) for s in SEEDS],
    }
    path = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "py_random" / "expected.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fixture, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {path} (Python {fixture['python']})")


if __name__ == "__main__":
    main()
