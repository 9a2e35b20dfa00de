#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz harness (fuzz_model.c).

Each seed is a sequence of operations in the harness's encoding: one opcode
byte (mod 24), then the operation's argument bytes. Usage:
    python3 tests/reliability/make_corpus.py [dir]
"""
import os
import random
import sys

# opcode, argument count (see LLVMFuzzerTestOneInput in fuzz_model.c)
CANCEL, DEADLINE, PAST, SHORT, ODD_TIMEOUT, VALUE, WITHOUT = 0, 1, 2, 3, 4, 5, 6
DO_CANCEL, DO_CANCEL_CAUSE, RELEASE, RETAIN, AFTER, STOP = 9, 10, 11, 13, 14, 15
DONE_FD, FORMAT, WAIT, SETTLE, STRERROR, FAULT = 16, 17, 18, 19, 20, 23


def derive(kind, parent, a=0, b=1):
    return [kind, parent, a, b]


SEEDS = {
    # A chain of every kind, then a cancel at the top reaching all of it.
    "chain_cancel": derive(CANCEL, 0) + derive(VALUE, 0, 0, 2)
    + derive(DEADLINE, 1, 5) + derive(WITHOUT, 2) + derive(CANCEL, 3)
    + [AFTER, 2, AFTER, 4, DONE_FD, 2, DO_CANCEL_CAUSE, 0, 42, FORMAT, 4, 9,
       STOP, 0, STOP, 0],
    # Short real deadlines, nested work under them, advance past them.
    "short_deadlines": derive(SHORT, 0, 3, 0) + derive(VALUE, 0, 1, 2)
    + [AFTER, 1] + derive(SHORT, 1, 7, 1) + [SETTLE] + derive(CANCEL, 1)
    + [WAIT, 2, 1, DONE_FD, 2, STOP, 0],
    # Past deadlines, with and without causes; children of done parents.
    "past": derive(PAST, 0, 3, 0) + derive(CANCEL, 0) + derive(VALUE, 1, 4, 2)
    + derive(PAST, 2, 0, 1) + [AFTER, 3, DONE_FD, 3, WAIT, 3, 1, STOP, 0],
    # Parent deadline earlier than the child's: the child is a cancel ctx.
    "deadline_order": derive(DEADLINE, 0, 2) + derive(DEADLINE, 0, 9, 4)
    + derive(DEADLINE, 1, 1, 6) + [FORMAT, 2, 0, FORMAT, 1, 33]
    + derive(ODD_TIMEOUT, 2, 3),
    # Huge and zero timeouts.
    "odd_timeouts": derive(ODD_TIMEOUT, 0, 0) + derive(ODD_TIMEOUT, 1, 3)
    + derive(ODD_TIMEOUT, 2, 4) + derive(ODD_TIMEOUT, 3, 2)
    + derive(ODD_TIMEOUT, 4, 1) + [DO_CANCEL, 2, 0],
    # Values: shadowing, NULL values, without_cancel keeps values.
    "values": derive(VALUE, 0, 0, 2) + derive(VALUE, 0, 3, 2)
    + derive(VALUE, 1, 1, 0) + derive(WITHOUT, 2) + derive(VALUE, 3, 2, 2)
    + [FORMAT, 4, 12, RELEASE, 0, RELEASE, 0, FORMAT, 2, 0],
    # without_cancel cuts cancellation; cancel of non-cancellable: EINVAL.
    "without": derive(CANCEL, 0) + derive(WITHOUT, 0) + derive(CANCEL, 1)
    + [AFTER, 1, AFTER, 2, DO_CANCEL, 0, 0, DO_CANCEL, 1, 0, DO_CANCEL, 2, 0,
       DO_CANCEL, 3, 0, DO_CANCEL, 4, 0, DONE_FD, 1, DONE_FD, 2, STOP, 0,
       STOP, 0],
    # Retain/release juggling with children keeping parents alive.
    "refs": derive(CANCEL, 0) + [RETAIN, 0, RETAIN, 0] + derive(VALUE, 0, 0, 2)
    + [RELEASE, 0, RELEASE, 0, RELEASE, 0] + derive(CANCEL, 0)
    + [DO_CANCEL, 0, 0, RELEASE, 0, RELEASE, 0],
    # After-funcs on live, done and never-done contexts; stop them all.
    "afters": derive(CANCEL, 0) + [AFTER, 0, AFTER, 0, AFTER, 1, AFTER, 2,
                                   STOP, 1, DO_CANCEL_CAUSE, 0, 0, AFTER, 0,
                                   STOP, 0, STOP, 0, STOP, 0, STOP, 0],
    "strerror": [STRERROR, 135, STRERROR, 120, STRERROR, 0, STRERROR, 255,
                 FORMAT, 0, 0, FORMAT, 1, 5, WAIT, 0, 2, DONE_FD, 1],
    # Fault injection (only meaningful in CTX_FAULT_INJECTION builds).
    "faults": [FAULT, 0, CANCEL, 0, 0, 1, FAULT, 0, SHORT, 0, 1, 1,
               FAULT, 1, SHORT, 0, 1, 1, FAULT, 0, AFTER, 0, FAULT, 0,
               VALUE, 0, 0, 2] + derive(CANCEL, 0) + [DO_CANCEL, 0, 0],
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, ops in SEEDS.items():
        with open(os.path.join(out, "seed_" + name), "wb") as f:
            f.write(bytes(ops))
    rng = random.Random(20261122)
    for i in range(12):
        n = rng.choice([16, 48, 128, 400])
        with open(os.path.join(out, "seed_random_%02d" % i), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(n)))


if __name__ == "__main__":
    main()
