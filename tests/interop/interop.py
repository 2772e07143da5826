#!/usr/bin/env python3
"""Cross-language Avro interop check for regionflow's Kafka topics.

Proves that a producer or consumer written in another language, with nothing but the
.avsc files in schemas/avro, can talk to regionflow. Two independent Python Avro
libraries are used, each as a naive user would use it:

  * fastavro  (its own parser, encoder and fingerprint function)
  * avro      (the official Apache Avro package, likewise)

Values on every topic use Avro single-object encoding:

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical
          |   Form, little-endian | Avro binary datum

The two libraries do not agree on the canonical form of Event (for `client_time_ms`,
a long with logicalType timestamp-millis, fastavro writes "long" like Java does,
avro 1.12 writes {"type":"long"}), so they put different fingerprints in the header.
The producer deliberately uses each library's own fingerprint: that is what a
producer in that language would send.

Sub-commands (progress goes to stderr, results to stdout as one JSON document; any
failure exits non-zero with a message):

  fingerprints   each library's fingerprint of each schema file
  produce        encode one event of every upstream op from event.avsc and produce them
  consume        read_committed consumer that decodes a topic using a fingerprint file

Called by the Rust integration tests, with the virtualenv made from requirements.txt
next to this file:

    python3 -m venv ~/.cache/regionflow/interop-venv
    ~/.cache/regionflow/interop-venv/bin/pip install -r tests/interop/requirements.txt
    ~/.cache/regionflow/interop-venv/bin/python tests/interop/interop.py fingerprints
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import sys
import time
import uuid
from pathlib import Path

# The schema files, resolved relative to this script: tests/interop -> schemas/avro.
SCHEMA_DIR = (Path(__file__).resolve().parent / ".." / ".." / "schemas" / "avro").resolve()
SCHEMA_FILES = ("event.avsc", "reconciled_event.avsc", "conflict.avsc")
LIBRARIES = ("fastavro", "avro")

MAGIC = b"\xc3\x01"  # Avro single-object encoding marker
HEADER_LEN = len(MAGIC) + 8  # magic + fingerprint

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ONE_MS = datetime.timedelta(milliseconds=1)

# How long librdkafka may try to deliver one record before reporting it failed.
DELIVERY_TIMEOUT_MS = 30_000


class Fail(Exception):
    """A failure to report on stderr before exiting with status 1."""


def log(msg: str) -> None:
    print(f"interop: {msg}", file=sys.stderr, flush=True)


def describe(e: BaseException) -> str:
    """An exception as a message; some decoders raise bare EOFError()."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def to_ms(dt: datetime.datetime) -> int:
    """A timestamp-millis value as the long that is on the wire."""
    return (dt - EPOCH) // ONE_MS


def jsonable(v):
    """A decoded Avro value in JSON-friendly form: bytes as hex, timestamps as epoch ms."""
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, datetime.datetime):
        return to_ms(v)
    return v


# --------------------------------------------------------------------------------------
# Library adapters. Each parses one .avsc with its library and offers the same four
# operations. Decoded values have one common shape so both libraries' output can be
# compared: a record chosen from a union holding more than one record (Event.op) is
# tagged with its full name, {"regionflow.CounterAdd": {"delta": 3}}; every other value
# is plain (nullable unions give the value or None).
# --------------------------------------------------------------------------------------


class FastavroCodec:
    name = "fastavro"

    def __init__(self, path: Path):
        import fastavro
        import fastavro.schema

        self._fastavro = fastavro
        raw = json.loads(path.read_text())
        self.namespace = raw.get("namespace", "")  # parse_schema folds it into names
        self.schema = fastavro.parse_schema(raw)

    def fingerprint(self) -> bytes:
        """fastavro's own CRC-64-AVRO fingerprint, in header byte order."""
        pcf = self._fastavro.schema.to_parsing_canonical_form(self.schema)
        # fastavro returns the hex of the little-endian bytes, i.e. header order.
        return bytes.fromhex(self._fastavro.schema.fingerprint(pcf, "CRC-64-AVRO"))

    def op(self, branch: str, fields: dict):
        """A value for the op union: fastavro's (record name, value) tuple notation."""
        return (f"{self.namespace}.{branch}", fields)

    def encode(self, datum) -> bytes:
        buf = io.BytesIO()
        self._fastavro.schemaless_writer(buf, self.schema, datum, strict=True)
        return buf.getvalue()

    def decode(self, data: bytes):
        buf = io.BytesIO(data)
        # return_record_name(_override): records in unions of several records come back
        # as (name, value) tuples, records in ["null", record] unions come back plain.
        v = self._fastavro.schemaless_reader(
            buf,
            self.schema,
            None,
            return_record_name=True,
            return_record_name_override=True,
        )
        _check_consumed(buf, data)
        return self._untuple(v)

    def _untuple(self, v):
        """fastavro's (name, value) union tuples -> {name: value}."""
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
            return {v[0]: self._untuple(v[1])}
        if isinstance(v, dict):
            return {k: self._untuple(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self._untuple(x) for x in v]
        return v


class AvroCodec:
    name = "avro"

    def __init__(self, path: Path):
        import avro.io
        import avro.schema

        self._io = avro.io
        self.schema = avro.schema.parse(path.read_text())

        class TaggingReader(avro.io.DatumReader):
            """The library's DatumReader; notes which record a multi-record union held."""

            def read_union(self, writers_schema, readers_schema, decoder):
                pos = decoder.reader.tell()
                index = int(decoder.read_long())
                decoder.reader.seek(pos)  # let the library read the union itself
                value = super().read_union(writers_schema, readers_schema, decoder)
                branches = writers_schema.schemas
                records = [s for s in branches if isinstance(s, avro.schema.RecordSchema)]
                if len(records) > 1 and isinstance(branches[index], avro.schema.RecordSchema):
                    return {branches[index].fullname: value}
                return value

        self._reader = TaggingReader(self.schema, self.schema)
        self._writer = avro.io.DatumWriter(self.schema)

    def fingerprint(self) -> bytes:
        """avro's own CRC-64-AVRO fingerprint (of its canonical_form), little-endian."""
        return bytes(self.schema.fingerprint("CRC-64-AVRO"))

    def op(self, branch: str, fields: dict):
        """A value for the op union: avro picks the branch by validating a plain dict
        (a record validates only when the dict's keys are among its fields); the
        producer decodes its own bytes to make sure the intended branch was chosen."""
        return dict(fields)

    def encode(self, datum) -> bytes:
        buf = io.BytesIO()
        # Not DatumWriter.write(): its up-front validate() in avro 1.12 resolves a union
        # to the FIRST branch whose shallow check passes (a dict whose keys are among the
        # record's fields), so Release {"order_id": ..} is judged as Reserve, which comes
        # before it, and rejected for lacking qty. write_data() is what write() runs next;
        # its write_union takes the branch whose full validation passes, so every op can
        # be written. `produce` decodes the bytes back to confirm the branch and fields.
        self._writer.write_data(self.schema, datum, self._io.BinaryEncoder(buf))
        return buf.getvalue()

    def decode(self, data: bytes):
        buf = io.BytesIO(data)
        v = self._reader.read(self._io.BinaryDecoder(buf))
        _check_consumed(buf, data)
        return v


def _check_consumed(buf: io.BytesIO, data: bytes) -> None:
    if buf.tell() != len(data):
        raise ValueError(f"{len(data) - buf.tell()} trailing bytes after the datum")


CODECS = {"fastavro": FastavroCodec, "avro": AvroCodec}


def load_codec(library: str, schema_file: str):
    path = SCHEMA_DIR / schema_file
    if not path.is_file():
        raise Fail(f"schema file {path} not found")
    try:
        return CODECS[library](path)
    except ImportError as e:
        raise Fail(f"{library} is not installed ({e}); install requirements.txt") from e
    except Exception as e:
        raise Fail(f"{library} could not parse {path}: {describe(e)}") from e


# --------------------------------------------------------------------------------------
# fingerprints
# --------------------------------------------------------------------------------------


def cmd_fingerprints(_args) -> dict:
    out = {}
    for lib in LIBRARIES:
        out[lib] = {}
        for f in SCHEMA_FILES:
            fp = load_codec(lib, f).fingerprint().hex()
            log(f"{lib:8} {f:24} {fp}")
            out[lib][f] = fp
    return out


# --------------------------------------------------------------------------------------
# produce
# --------------------------------------------------------------------------------------


def upstream_ops(prefix: str, library: str):
    """(key, op branch, op fields) for one event of every op an upstream producer may
    send, on keys of the matching family. Heartbeat (processor-internal) and CustomOp
    (needs a registered user aggregate) are not upstream ops of the built-in families."""
    likes, profile, board = f"{prefix}:likes:1", f"{prefix}:profile:1", f"{prefix}:board:1"
    sku, chat = f"{prefix}:sku:1", f"{prefix}:chat:1"
    sched = f"{prefix}:reminder:1"
    return [
        (likes, "CounterAdd", {"delta": 3}),
        (likes, "CounterAdd", {"delta": -1}),
        # The processor-assigned `dot` and the optional `context` are null from producers.
        (profile, "RegisterPut", {"value": f"theme-{library}", "context": None, "dot": None}),
        (board, "ScoreSubmit", {"player": f"{library}-p1", "score": 120}),
        (board, "ScoreSubmit", {"player": f"{library}-p2", "score": 75}),
        (sku, "StockAdd", {"qty": 10, "grants": None}),
        (sku, "Reserve", {"order_id": "o1", "qty": 2}),
        (sku, "Release", {"order_id": "o1"}),
        (chat, "MessagePost", {"author": f"{library}-user", "text": f"hello from {library}"}),
        # Every field given: the schedule's policies are strings, its bounds nullable.
        (sched, "ScheduleSet", {
            "cron": "0 9 * * MON-FRI", "zone": "Asia/Kolkata", "payload": f"standup-{library}",
            "home": None, "on_gap": "after_gap", "on_fold": "first", "missed": "coalesce",
            "catch_up_max": 10, "catch_up_window_ms": 86400000, "start_ms": None, "end_ms": None,
        }),
        (sched, "ScheduleCancel", {"reason": None}),
    ]


def build_events(codec, prefix: str, library: str):
    """The events in the library's native form, with what each should decode to."""
    now = datetime.datetime.now(datetime.timezone.utc)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # whole milliseconds
    out = []
    for i, (key, branch, fields) in enumerate(upstream_ops(prefix, library)):
        # client_time_ms on every other event, null on the rest.
        client_time = now + i * ONE_MS if i % 2 == 0 else None
        native = {
            "event_id": f"{prefix}-{library}-{i}",
            "key": key,
            "op": codec.op(branch, fields),
            "region": None,
            "client_time_ms": client_time,
            "hlc": None,
            "refusal": None,
        }
        expected = dict(native, op={f"regionflow.{branch}": fields})
        out.append((native, jsonable(expected), branch))
    return out


def cmd_produce(args) -> dict:
    from confluent_kafka import KafkaException, Producer

    codec = load_codec(args.library, "event.avsc")
    fp = codec.fingerprint()
    log(f"{args.library}: Event fingerprint {fp.hex()}")

    # Encode everything first, and decode our own bytes back: with avro the union branch
    # is chosen by validation, so this is where a wrong branch would be caught.
    records = []
    for native, expected, branch in build_events(codec, args.prefix, args.library):
        try:
            datum = codec.encode(native)
            back = jsonable(codec.decode(datum))
        except Exception as e:
            raise Fail(f"{args.library} could not encode {native['event_id']}: {describe(e)}") from e
        if back != expected:
            raise Fail(
                f"{args.library} round trip of {native['event_id']} differs:\n"
                f"  wanted  {json.dumps(expected)}\n  decoded {json.dumps(back)}"
            )
        records.append((native["key"], MAGIC + fp + datum, expected, branch))

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "client.id": f"rf-interop-{args.library}",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            "error_cb": lambda err: log(f"kafka: {err}"),
        }
    )

    reports = {}  # index -> (error or None, partition, offset)

    def on_delivery(i):
        return lambda err, msg: reports.__setitem__(
            i, (err, msg.partition(), msg.offset())
        )

    try:
        for i, (key, value, _, _) in enumerate(records):
            producer.produce(
                args.topic, key=key.encode("utf-8"), value=value, on_delivery=on_delivery(i)
            )
            producer.poll(0)
    except KafkaException as e:
        raise Fail(f"produce to {args.topic} at {args.bootstrap}: {e}") from e
    log(f"sent {len(records)} records to {args.topic}, flushing")
    left = producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 10)
    if left:
        raise Fail(f"{left} records still undelivered after flush")

    produced = []
    for i, (key, _, expected, branch) in enumerate(records):
        if i not in reports:
            raise Fail(f"no delivery report for {expected['event_id']}")
        err, partition, offset = reports[i]
        if err is not None:
            raise Fail(f"{expected['event_id']} not delivered: {err}")
        produced.append(
            {
                "key": key,
                "event_id": expected["event_id"],
                "op": branch,
                "client_time_ms": expected["client_time_ms"],
                "partition": partition,
                "offset": offset,
            }
        )
    log(f"all {len(produced)} records delivered")
    return {"produced": produced, "fingerprint": fp.hex()}


# --------------------------------------------------------------------------------------
# consume
# --------------------------------------------------------------------------------------


def read_fingerprint_file(path: str) -> dict:
    """fingerprint hex -> schema file, from lines
    `fingerprint_hex<TAB>schema_file<TAB>form<TAB>written` (# starts a comment line)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise Fail(f"cannot read fingerprint file: {e}") from e
    table = {}
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        fp = cols[0].strip().lower()
        if len(cols) < 2 or len(fp) != 16 or any(c not in "0123456789abcdef" for c in fp):
            raise Fail(f"{path}:{n}: expected fingerprint_hex<TAB>schema_file<TAB>..., got {line!r}")
        schema_file = cols[1].strip()
        if table.get(fp, schema_file) != schema_file:
            raise Fail(f"{path}:{n}: fingerprint {fp} listed for both {table[fp]} and {schema_file}")
        table[fp] = schema_file
    if not table:
        raise Fail(f"{path} lists no fingerprints")
    return table


def cmd_consume(args) -> dict:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException

    table = read_fingerprint_file(args.fingerprints)
    # Parse every schema the file names up front, so a bad file fails before consuming.
    codecs = {f: load_codec(args.library, f) for f in sorted(set(table.values()))}

    def decode(msg):
        value, where = msg.value(), f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        if value is None:
            raise Fail(f"{where}: record has no value")
        if len(value) < HEADER_LEN or value[:2] != MAGIC:
            raise Fail(f"{where}: not Avro single-object encoding (starts {value[:2].hex()})")
        fp = value[2:HEADER_LEN].hex()
        if fp not in table:
            raise Fail(f"{where}: fingerprint {fp} is not in {args.fingerprints}")
        schema_file = table[fp]
        try:
            return fp, schema_file, codecs[schema_file].decode(value[HEADER_LEN:])
        except Exception as e:
            raise Fail(f"{where}: {args.library} cannot decode with {schema_file}: {describe(e)}") from e

    group = f"rf-interop-{args.library}-{uuid.uuid4().hex}"
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            # As the processor sets it. Tansu holds a JoinGroup for about half the session
            # timeout, so librdkafka's default (45 s) would cost ~23 s before the first fetch.
            "session.timeout.ms": 6000,
            "error_cb": lambda err: log(f"kafka: {err}"),
        }
    )

    def on_assign(c, partitions):
        # A fresh group starts at the beginning anyway; say so explicitly.
        for p in partitions:
            p.offset = OFFSET_BEGINNING
        log(f"assigned {args.topic} partitions {[p.partition for p in partitions]}")
        c.assign(partitions)

    records, seen, total = [], set(), 0
    deadline = time.monotonic() + args.timeout
    try:
        consumer.subscribe([args.topic], on_assign=on_assign)
        while len(records) < args.expect:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(
                    f"timed out after {args.timeout}s: decoded {len(records)} of "
                    f"{args.expect} records with key prefix {args.prefix!r} "
                    f"({total} records read from {args.topic} in all)"
                )
            msg = consumer.poll(min(left, 0.5))
            if msg is None:
                continue
            if msg.error():
                err = msg.error()
                if err.fatal():
                    raise Fail(f"consumer: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log(f"consumer: {err}")
                continue
            total += 1
            # Every record must decode, including ones we then skip.
            fp, schema_file, value = decode(msg)
            seen.add(fp)
            key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
            if key is None or not key.startswith(args.prefix):
                continue
            records.append(
                {
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "key": key,
                    "fingerprint": fp,
                    "schema": schema_file,
                    "value": jsonable(value),
                }
            )
            log(f"{len(records)}/{args.expect}: {key} @{msg.partition()}:{msg.offset()} ({fp})")
    except KafkaException as e:
        raise Fail(f"consume {args.topic} at {args.bootstrap}: {e}") from e
    finally:
        consumer.close()
    return {"records": records, "fingerprints_seen": sorted(seen)}


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fingerprints", help="print each library's fingerprint of each schema")
    p.set_defaults(run=cmd_fingerprints)

    def kafka_args(p):
        p.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
        p.add_argument("--topic", required=True)
        p.add_argument("--library", required=True, choices=LIBRARIES)
        p.add_argument("--prefix", required=True, help="key / event id prefix of this run")

    p = sub.add_parser("produce", help="produce one event of every upstream op")
    kafka_args(p)
    p.set_defaults(run=cmd_produce)

    p = sub.add_parser("consume", help="decode records of a topic with one library")
    kafka_args(p)
    p.add_argument("--fingerprints", required=True, metavar="FILE",
                   help="TSV: fingerprint_hex, schema_file, form, written")
    p.add_argument("--expect", required=True, type=int, metavar="N",
                   help="records with the key prefix to decode")
    p.add_argument("--timeout", required=True, type=float, metavar="SECS")
    p.set_defaults(run=cmd_consume)

    args = ap.parse_args(argv)
    try:
        result = args.run(args)
    except Fail as e:
        log(f"error: {e}")
        return 1
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
