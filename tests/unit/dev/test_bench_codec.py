"""The Avro-encoding benchmark measures every output record type on a replayed book's own
outputs, and checks the two encoders agree before it times them."""

from __future__ import annotations

from streams.dev.bench import codec as bench


def test_every_output_type_is_measured_on_replayed_outputs() -> None:
    results = bench.run(loans=40, days=90, runs=1, per_type=50)
    assert {r.name for r in results} == {
        "OverdueEvent",
        "Notification",
        "BureauRecord",
        "PartnerShare",
        "CollectionTask",
    }
    for r in results:
        assert r.records > 0 and r.mean_bytes > 0 and r.fastavro_us > 0 and r.generated_us > 0
    table = bench.report(results)
    assert table.count("\n| ") == len(results) + 1  # the header and a row per type
