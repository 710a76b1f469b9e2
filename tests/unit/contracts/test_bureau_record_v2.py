"""BureauRecord release v2 (SPEC §7.1): the chain fields added as Avro allows, so a consumer that
still holds v1 keeps reading, duewatch reads v1 data, and a record's hash survives the wire."""

from __future__ import annotations

import io
import json

import fastavro

from streams.contracts import codec
from streams.core import chain
from tests.support.samples import SAMPLES, SCHEMAS


def chained() -> dict:
    """A sample BureauRecord as the router makes it: linked into its loan's chain."""
    native = codec.from_json("BureauRecord", SAMPLES["BureauRecord"][0])
    return chain.link(native, 3, "ab" * 32)


def v1_schema():
    return fastavro.parse_schema(json.loads((SCHEMAS / "released" / "v1" / "BureauRecord.avsc").read_text()))


def test_v2_is_released_and_adds_only_the_chain_fields_with_defaults() -> None:
    assert {1, 2} <= set(codec.released_versions("BureauRecord"))
    v1 = json.loads((SCHEMAS / "released" / "v1" / "BureauRecord.avsc").read_text())["fields"]
    v2 = json.loads((SCHEMAS / "released" / "v2" / "BureauRecord.avsc").read_text())["fields"]
    assert v2[: len(v1)] == v1  # appended at the end, nothing before them touched
    added = {f["name"]: f for f in v2[len(v1) :]}
    assert list(added) == ["chain_seq", "prev_hash", "hash"]
    assert all(f["default"] is None and f["type"][0] == "null" for f in added.values())


def test_a_consumer_holding_v1_reads_what_duewatch_writes_now() -> None:
    record = chained()
    data = codec.encode("BureauRecord", record)
    expected = {k: v for k, v in codec.decode("BureauRecord", data).items() if k not in chain.CHAIN_FIELDS}
    # with the writer's schema (from the fingerprint header or the registry), as Avro resolves it
    resolved = fastavro.schemaless_reader(io.BytesIO(data), codec.load_schema("BureauRecord"), v1_schema())
    assert resolved == expected
    # and with v1 alone, as a consumer that ignores the headers reads: the new fields come last
    assert fastavro.schemaless_reader(io.BytesIO(data), v1_schema(), None) == expected


def test_duewatch_reads_v1_data_as_records_written_before_the_chain() -> None:
    legacy = codec.from_json("BureauRecord", SAMPLES["BureauRecord"][0])
    fo = io.BytesIO()
    fastavro.schemaless_writer(fo, v1_schema(), legacy)
    for decoded in (
        codec.decode("BureauRecord", fo.getvalue()),
        codec.decode("BureauRecord", fo.getvalue(), writer_version=1),
    ):
        assert decoded == legacy and all(decoded[name] is None for name in chain.CHAIN_FIELDS)
    result = chain.verify([(legacy, "offset 0", "L2")])
    assert result.holds and result.chains[0].unchained == 1 and result.chains[0].length == 0


def test_the_hash_survives_avro_and_the_json_form() -> None:
    record = chained()
    assert chain.record_hash(record) == record["hash"]
    decoded = codec.decode("BureauRecord", codec.encode("BureauRecord", record))
    assert decoded == record and chain.record_hash(decoded) == record["hash"]
    as_json = codec.to_json("BureauRecord", record)
    assert isinstance(as_json["chain_seq"], int) and as_json["prev_hash"] == "ab" * 32
    assert chain.record_hash(codec.from_json("BureauRecord", as_json)) == record["hash"]
