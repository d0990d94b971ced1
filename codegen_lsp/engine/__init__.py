"""The engine: token ids in, continuations out, reusing the KV cache across keystrokes.

Importing this package asks OpenMP (if torch is not loaded yet) to let idle threads sleep
instead of spinning: an editor's machine is busy with other work, and spinning torch threads
that compete with it for two cores made one decode step up to 10x slower in measurements.
Set ``OMP_WAIT_POLICY`` yourself to override.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
