"""The records that cross rooms are plain data in connectors/records.py: one AlarmOp union, no
SQL inside a record (the store writes them), the old import places still work, and an alarm
journal written before the records moved still reads back."""
from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from plantwatch.connectors import alarm_db, alarm_journal, records, store

OPS = [records.EventStart, records.EventEnd, records.AlarmWrite, records.AlarmFields, records.OperatorAction,
       records.IncidentOpen, records.IncidentJoin, records.IncidentCause, records.IncidentClose,
       records.JournalApplied]


def test_one_alarm_op_union_of_plain_records():
    assert list(typing.get_args(records.AlarmOp)) == OPS
    for cls in OPS:
        assert dataclasses.is_dataclass(cls) and "apply" not in vars(cls), cls.__name__
    tree = ast.parse(Path(records.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "asyncpg" not in imported


def test_the_old_import_places_name_the_same_records():
    assert store.AlarmWrite is records.AlarmWrite and store.DeadLetter is records.DeadLetter
    assert store.AlarmOp is records.AlarmOp
    assert alarm_db.OperatorAction is records.OperatorAction and alarm_db.IncidentOpen is records.IncidentOpen
    assert alarm_journal.JournalApplied is records.JournalApplied


def test_a_journal_entry_of_the_earlier_module_names_still_reads_back():
    old = ('[{"module": "plantwatch.connectors.alarm_db", "type": "OperatorAction", "fields": {"detector_id": "d",'
           ' "sensor_id": 1, "t": 1.0, "action": "ack", "actor": "op", "role": "operator", "reason": "x"}},'
           ' {"module": "plantwatch.connectors.store", "type": "EventEnd", "fields": {"detector_id": "d",'
           ' "sensor_id": 1, "t": 2.0, "peak": 3.0}}]')
    ops = alarm_journal.decode_ops(old)
    assert [type(o) for o in ops] == [records.OperatorAction, records.EventEnd]
    again = alarm_journal.decode_ops(alarm_journal.encode_ops(ops))
    assert again == ops
