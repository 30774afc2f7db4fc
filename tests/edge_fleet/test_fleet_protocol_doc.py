"""docs/fleet-protocol.md against the wire contract (edge_runtime/contract): the doc's tables list exactly the
topics of `catalog.MESSAGES` with their direction, QoS, retain flag and schema version, each row names every
top-level key of its document, and the monitors' subscriptions are the contract's filters. Neither the doc nor
the contract can change alone."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from edge_fleet.monitor import subscriptions
from edge_runtime.contract import MESSAGES, STATUS_SCHEMA, FleetTopics, documents

DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet-protocol.md"
SECTIONS = {"## Device -> fleet": "device -> fleet", "## Fleet -> device": "fleet -> device"}


def table_rows() -> list[tuple[str, str, int, bool, int, str]]:
    """(direction, topic, qos, retained, schema, payload) of every topic row of the doc's tables."""
    rows, direction = [], None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            direction = next((value for heading, value in SECTIONS.items() if line.startswith(heading)), None)
        match = re.match(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| (.*) \|$", line)
        if match is None:
            continue
        assert direction is not None, f"a topic table outside the two direction sections: {line}"
        topic, qos, schema, payload = match.groups()
        rows.append((direction, topic, int(qos.split(",")[0]), "retained" in qos, int(schema), payload))
    return rows


def test_the_tables_list_exactly_the_contracts_messages():
    documented = {row[:5] for row in table_rows()}
    defined = {(m.direction, m.topic, m.qos, m.retained, m.schema) for m in MESSAGES}
    assert documented == defined, (f"only in the doc: {sorted(documented - defined)}; "
                                   f"only in the contract: {sorted(defined - documented)}")
    assert len(table_rows()) == len(MESSAGES), "a topic is listed twice"


def document_keys(name: str) -> list[str]:
    document = getattr(documents, name)
    if isinstance(document, type) and issubclass(document, BaseModel):
        return list(document.model_fields)
    return list(typing.get_type_hints(document))


def test_every_row_names_every_key_of_its_document():
    payloads = {topic: payload for _, topic, _, _, _, payload in table_rows()}
    for message in MESSAGES:
        if message.document == "bytes":
            continue
        payload = payloads[message.topic]
        missing = [key for key in document_keys(message.document) if f'"{key}"' not in payload]
        assert not missing, f"{message.topic}: the doc does not name {missing} of {message.document}"


def test_the_status_schema_version_on_the_wire_is_the_contracts():
    payload = next(row[5] for row in table_rows() if row[1].endswith("/status") and "deploy" not in row[1])
    assert f'"schema": {STATUS_SCHEMA}' in payload


def test_the_monitors_subscriptions_are_documented():
    text = DOC.read_text().split("## Monitors", 1)[1]
    topics = FleetTopics("edge")
    for topic in (topics.status_filter, topics.stats_filter, topics.drift_filter, topics.deploy_status_filter,
                  topics.snapshot_filter):
        assert f"`{topic}`" in text, topic
    assert [topic for topic, _ in subscriptions("edge", None)] == [
        topics.status_filter, topics.stats_filter, topics.drift_filter, topics.deploy_status_filter,
        topics.snapshot_filter]
    assert "`$share/<group>/edge/+/stats`" in text


def test_the_contract_imports_only_the_standard_library_and_pydantic():
    """The fleet tool and a bare device install both import it: nothing else may come with it."""
    code = ("import sys; import edge_runtime.contract; "
            "print('\\n'.join(sorted({name.split('.')[0] for name in sys.modules})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    allowed = {"edge_runtime", "pydantic", "pydantic_core", "typing_extensions", "annotated_types",
               "typing_inspection", "_distutils_hack", "sitecustomize", "usercustomize"}
    foreign = [name for name in loaded if name not in sys.stdlib_module_names and name not in allowed
               and not name.startswith("_")]
    assert foreign == [], foreign
    edge = [name for name in subprocess.run(
        [sys.executable, "-c", "import sys, edge_runtime.contract; print(' '.join(m for m in sys.modules "
         "if m.startswith('edge_runtime')))"], capture_output=True, text=True, check=True).stdout.split()]
    assert all(name == "edge_runtime" or name.startswith("edge_runtime.contract") for name in edge), edge
