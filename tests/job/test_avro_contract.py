"""The Avro schema Flink writes for our DDL is exactly the contract in avro/*.avsc."""

from __future__ import annotations

import json

import pytest

from jobs import avro_schema

pytestmark = pytest.mark.job


def _flink_avro_schema(t_env, name: str) -> dict:
    from pyflink.java_gateway import get_gateway

    t_env.execute_sql(f"CREATE TEMPORARY TABLE contract_{name} "
                      f"({avro_schema.column_ddl(name)}) WITH ('connector' = 'blackhole')")
    row_type = (t_env.from_path(f"contract_{name}")._j_table.getResolvedSchema()
                .toPhysicalRowDataType().getLogicalType())
    converter = get_gateway().jvm.org.apache.flink.formats.avro.typeutils.AvroSchemaConverter
    return json.loads(converter.convertToSchema(row_type).toString())


def _shape(schema: dict) -> list[tuple]:
    """Field names, types and defaults: what decides the binary encoding (record name,
    namespace and docs do not)."""
    return [(f["name"], json.dumps(f["type"]), f.get("default", "<none>"))
            for f in schema["fields"]]


@pytest.mark.parametrize("name", [
    "EmailEvent", "DeadLetter", "Conversion", "CampaignMetrics", "AbDecision",
    "SubscriberProfile", "ErasureRequest", "SubscriberScore", "SubscriberSendTime",
    "SubscriberSuppression", "JourneyTrigger"])
def test_flink_ddl_encodes_to_the_avsc_contract(t_env, name):
    assert _shape(_flink_avro_schema(t_env, name)) == _shape(avro_schema.load(name))
