"""The peer in the processor benchmark: a Quix Streams application doing the regional
processor's job without the multi-region parts. It reads `events` (Avro single-object
encoding), drops (key, event_id) pairs it has seen (RocksDB state, per key), folds a
per-key count / counter total, and writes the event with its fold to an output topic,
exactly once (Quix's `processing_guarantee="exactly-once"`: Kafka transactions with the
consumer offsets; no changelog topics, see below).

Run by the `bench` binary inside a venv it creates; arguments:
  quix_app.py BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC GROUP STATE_DIR SCHEMA_FILE COMMIT_MS
"""

import io
import json
import sys

import fastavro
from quixstreams import Application

bootstrap, input_name, output_name, group, state_dir, schema_file, commit_ms = sys.argv[1:8]
schema = fastavro.parse_schema(json.load(open(schema_file)))
HEADER = 10  # C3 01 + 8-byte schema fingerprint


def decode(payload: bytes):
    if len(payload) < HEADER or payload[:2] != b"\xc3\x01":
        return None
    try:
        return fastavro.schemaless_reader(
            io.BytesIO(payload[HEADER:]),
            schema,
            schema,
            return_record_name=True,
            return_record_name_override=True,
        )
    except Exception:  # malformed: dropped (the processor dead-letters it)
        return None


def encode(header: bytes, ev) -> bytes:
    out = io.BytesIO()
    out.write(header)
    fastavro.schemaless_writer(out, schema, ev)
    return out.getvalue()


def process(payload: bytes, state):
    ev = decode(payload)
    if ev is None:
        return None
    seen = "id:" + ev["event_id"]
    if state.get(seen) is not None:
        return None  # duplicate
    state.set(seen, 1)
    name, fields = ev["op"]  # (record name, fields): the op union, by name
    delta = fields["delta"] if name.endswith("CounterAdd") else 1
    total = state.get("total", 0) + delta
    state.set("total", total)
    ev["region"] = "quix"
    return encode(payload[:HEADER], ev)


app = Application(
    broker_address=bootstrap,
    consumer_group=group,
    auto_offset_reset="earliest",
    processing_guarantee="exactly-once",
    commit_interval=int(commit_ms) / 1000.0,
    state_dir=state_dir,
    loglevel="WARNING",
    # On Tansu, a rebalance with changelog topics sends Quix into state recovery, where it
    # crashes on a changelog record (KeyError 'changelog__...'; Tansu's ListOffsets answers
    # are wrong, DESIGN.md broker facts). Without changelogs the state stays local RocksDB
    # and Quix writes one record per event instead of three: a faster peer, not a slower one.
    use_changelog_topics=False,
    # The same fetch wait as the regional processor and the passthrough.
    consumer_extra_config={"fetch.wait.max.ms": 10},
)
inp = app.topic(input_name, key_deserializer="bytes", value_deserializer="bytes")
out = app.topic(output_name, key_serializer="bytes", value_serializer="bytes")
sdf = app.dataframe(inp)
sdf = sdf.apply(process, stateful=True)
sdf = sdf.filter(lambda v: v is not None)
sdf.to_topic(out)
app.run()
