#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz harness (fuzz_model.c).

Each seed is a sequence of operations in the harness's encoding: one opcode
byte (mod 24), then the operation's argument bytes. A context argument byte
picks among the contexts still held, in creation order, then Background and
TODO (byte % (held + 2)). Usage:
    python3 tests/reliability/make_corpus.py [dir]
"""
import os
import random
import sys

# opcode, argument count (see LLVMFuzzerTestOneInput in fuzz_model.c)
CANCEL, DEADLINE, PAST, SHORT, ODD_TIMEOUT, VALUE, WITHOUT = 0, 1, 2, 3, 4, 5, 6
DO_CANCEL, DO_CANCEL_CAUSE, RELEASE, RETAIN, AFTER, STOP = 9, 10, 11, 13, 14, 15
DONE_FD, FORMAT, WAIT, SETTLE, STRERROR, FAULT = 16, 17, 18, 19, 20, 23
WAIT_WOKEN, RACE = 21, 22


def threaded(op, x, anc, mode=0, delay=0, cause=1, extra=0):
    """A wait (WAIT_WOKEN) or a race (RACE; mode 0 done_fd, 1 after_func,
    2 with_cancel, 3 with_deadline base+extra s) on context x while another
    thread cancels the anc-th held context of x's chain (0: x itself), after
    a delay of 0, 0, 10 or 100 us (delay 0..3); cause: odd for ctx_cancel,
    even c for cause c/2+2000."""
    return [op, extra << 4 | mode << 2 | delay, x, anc, cause]


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
    # Cancel an ancestor, then the descendants' done fds (obtained before)
    # must be readable, through a value and a deadline context, and not
    # through without_cancel; an unrelated tree's fd stays unreadable.
    "descendant_fd": derive(CANCEL, 0) + derive(CANCEL, 0)
    + derive(VALUE, 1, 3, 2) + derive(DEADLINE, 2, 5) + derive(WITHOUT, 1)
    + derive(CANCEL, 4) + derive(CANCEL, 6)
    + [DONE_FD, 1, DONE_FD, 2, DONE_FD, 3, DONE_FD, 4, DONE_FD, 5,
       DONE_FD, 6, DO_CANCEL, 0, 0, DO_CANCEL_CAUSE, 5, 7,
       DONE_FD, 0, DO_CANCEL, 6, 0],
    # A middle node cancelled: its subtree's fds ready, its ancestors' not;
    # then the middle node released (its descendants keep it) and the top
    # cancelled.
    "middle_fd": derive(CANCEL, 0) + derive(CANCEL, 0) + derive(CANCEL, 1)
    + derive(VALUE, 2, 4, 0) + derive(CANCEL, 3)
    + [DONE_FD, 0, DONE_FD, 1, DONE_FD, 3, DONE_FD, 4,
       DO_CANCEL_CAUSE, 2, 9, RELEASE, 2, DO_CANCEL, 0, 0],
    # Waits woken by a cancel from another thread, of the context itself or
    # of an ancestor; races of done_fd, after_func and derivations with it.
    "threads": derive(CANCEL, 0) + derive(VALUE, 0, 3, 0)
    + derive(CANCEL, 1) + derive(DEADLINE, 2, 9)
    + threaded(WAIT_WOKEN, 3, 3, delay=3)
    + derive(CANCEL, 4) + derive(CANCEL, 4)
    + threaded(WAIT_WOKEN, 5, 0, delay=2, cause=4)
    + threaded(RACE, 4, 0, mode=0, delay=1, cause=6)
    + derive(CANCEL, 6) + threaded(RACE, 6, 0, mode=1, delay=2)
    + derive(CANCEL, 7) + threaded(RACE, 7, 0, mode=2)
    + derive(CANCEL, 9) + threaded(RACE, 9, 0, mode=3, delay=1, extra=5)
    + derive(CANCEL, 11) + derive(WITHOUT, 11) + derive(CANCEL, 12)
    + threaded(WAIT_WOKEN, 13, 2, delay=2, mode=1)
    + threaded(WAIT_WOKEN, 14, 0, mode=1) + [DONE_FD, 10, STOP, 0],
    # Fault injection (only meaningful in CTX_FAULT_INJECTION builds).
    "faults": [FAULT, 0, CANCEL, 0, 0, 1, FAULT, 0, SHORT, 0, 1, 1,
               FAULT, 1, SHORT, 0, 1, 1, FAULT, 0, AFTER, 0, FAULT, 0,
               VALUE, 0, 0, 2] + derive(CANCEL, 0) + [DO_CANCEL, 0, 0]
    + derive(CANCEL, 0) + [FAULT, 0] + threaded(RACE, 1, 0, mode=2)
    + derive(CANCEL, 0) + [FAULT, 0] + threaded(RACE, 2, 0, mode=1)
    + [FAULT, 1] + threaded(RACE, 2, 0, mode=3),
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
