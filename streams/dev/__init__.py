"""Developer tooling: the demo, the synthetic book and its simulator, the local broker, the
benchmarks and worker processes. The runtime (``streams.worker``, ``streams.core``) never
imports this package."""
