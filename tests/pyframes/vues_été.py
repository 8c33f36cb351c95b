"""A view with a non-ASCII name in a module with a non-ASCII file name,
for tests/pyframes/run.py: reports must show both in UTF-8, exactly."""

import time


def attendre_données(s, noter):
    noter(); time.sleep(s)  # LINE:données
    return "données attendues"
