"""What the risk team reads: what-if comparisons of policies and the risk report (SPEC §7.3, §7.4).

Everything here works on what duewatch already produces — the overdue events after
retractions (what SPEC §4's consumers see), the routed records and the schedules — so the
same figures come out of a replay file, a what-if run or the topics themselves. The
computations (``retractions``, ``overrides``, ``metrics``, ``outcomes``, ``figures``) are
pure functions; ``charts`` draws them with plotly, ``whatif`` and ``report`` drive replay
and Kafka and write the files.
"""
