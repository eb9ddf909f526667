"""The incident drill: replay a mixed workload through a provider incident, hybrid versus plain proxy.

``scenario`` (what to run) → ``stack`` (processes) → ``load``, ``timeline``,
``sampler`` (during the run) → ``measure`` (figures) → ``report`` (JSON, HTML);
``runner`` ties them together for ``gateway drill``.
"""
