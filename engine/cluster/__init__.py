"""Running one collection across a Ray cluster (``segdl get --ray``).

The pure parts (``plan``, ``leases``) and the per-batch runner
(``nodejob``) import no Ray; ``driver``, ``node`` and ``lease_actor`` do,
and are imported only when ``--ray`` is given, so the rest of segdl starts
as fast as before and runs without the extra installed.
"""
