"""The runtime shell: the Faust worker that drives the pure core from Kafka.

Agents decode, call the core (``streams.core``), hand the effects to the checkpoint, which
sends, waits for the broker, writes the states and only then acknowledges the input offsets.
Everything that uses a private Faust or aiokafka member is in ``faust_internals``.
"""
