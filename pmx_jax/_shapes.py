"""Shape buckets: the sizes batched arrays are padded to, so that datasets of
similar size share one compiled program.

A compiled program is specific to the shapes of its arguments.  Padding the
number of subjects, of records per subject and of dose slots up to a small
ladder of sizes lets a new dataset of similar size reuse the program (in
memory within a process, and from the persistent compilation cache across
processes: see :mod:`pmx_jax._cache`).  Padding is masked everywhere (padding
records do nothing; padding subjects are copies of the last subject, left out
of every sum and output), so it changes no result, only the work.

The ladder has ``per_octave`` sizes between consecutive powers of two above
``minimum``: with 4 per octave (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...)
a size is padded by less than 25% (on average about 11%).  Subjects start at
32: below that a fit costs little more for 32 subjects than for 12, and every
small dataset then shares one program per model.

================  ========  ==========  ====================================
axis              minimum   per octave  examples
================  ========  ==========  ====================================
subjects          32        4           12 -> 32, 33 -> 40, 1000 -> 1024,
                                        10000 -> 10240
records/subject   8         4           12 -> 12, 13 -> 14, 71 -> 80
dose slots        1         4           1 -> 1, 5 -> 5, 9 -> 10, 30 -> 32
censored records  1         4           as dose slots (per subject: the
                                        censored observations the M3
                                        likelihood is evaluated at)
================  ========  ==========  ====================================
"""

from __future__ import annotations

SUBJECTS = dict(minimum=32, per_octave=4)
RECORDS = dict(minimum=8, per_octave=4)
DOSES = dict(minimum=1, per_octave=4)
CENSORED = dict(minimum=1, per_octave=4)


def bucket(n: int, *, minimum: int = 1, per_octave: int = 4) -> int:
    """The smallest size of the ladder that holds ``n`` (see the module notes):
    ``minimum`` for ``n <= minimum``, else ``n`` rounded up to a multiple of
    ``2**floor(log2 n) / per_octave`` (at least 1)."""
    n = int(n)
    if n <= minimum:
        return int(minimum)
    step = max(1, (1 << (n.bit_length() - 1)) // per_octave)
    return -(-n // step) * step


def subjects_bucket(n: int) -> int:
    return bucket(n, **SUBJECTS)


def records_bucket(n: int) -> int:
    return bucket(n, **RECORDS)


def doses_bucket(n: int) -> int:
    return bucket(n, **DOSES)


def censored_bucket(n: int) -> int:
    return bucket(n, **CENSORED)
