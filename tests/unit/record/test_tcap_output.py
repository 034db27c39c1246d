"""tcap_dllogger output follows the SDAA model-zoo contract, with the real library.

The library (1.0.0) is read from ``../shared/thirdparty`` (never copied into the project);
these tests skip, saying so, when that folder is missing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from arcbench.cli import main

from testutil import data_args

HERE = Path(__file__).resolve().parents[2]  # tests/
THIRDPARTY = HERE.parent.parent / "shared" / "thirdparty"

pytestmark = pytest.mark.skipif(not (THIRDPARTY / "tcap_dllogger" / "__init__.py").is_file(),
                                reason=f"the real tcap_dllogger is not at {THIRDPARTY}")


@pytest.fixture()
def tcap(monkeypatch):
    import sys

    had = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "tcap_dllogger"}
    monkeypatch.syspath_prepend(str(THIRDPARTY))
    monkeypatch.delenv("ARCBENCH_TCAP_DLLOGGER", raising=False)
    import tcap_dllogger

    assert Path(tcap_dllogger.__file__).resolve().is_relative_to(THIRDPARTY.resolve())
    yield tcap_dllogger
    # later tests must not find the library just because this one imported it
    for k in [k for k in sys.modules if k.split(".")[0] == "tcap_dllogger"]:
        del sys.modules[k]
    sys.modules.update(had)


def tcap_records(path):
    """LOG records of a tcap JSON file: (step, data) with the str()'d values parsed back."""
    from arcbench.reports.dllog import parse_file

    parsed = parse_file(path)
    assert not parsed.bad, parsed.bad
    return [(r.step, r.data) for r in parsed.logs]


def test_metrics_log_writes_the_contract_and_never_truncates_an_earlier_segment(tcap, tmp_path, capsys):
    from arcbench.record.metrics_log import MetricsLog, tcap_segments

    log = MetricsLog(str(tmp_path / "metrics.jsonl"), rank=0)
    assert log.echoes and Path(log.tcap_path).name == "metrics.tcap.json"
    backends = log._tcap_logger.backends
    assert [type(b).__name__ for b in backends] == ["StdOutBackend", "JSONStreamBackend"]
    assert [b.verbosity for b in backends] == [tcap.Verbosity.DEFAULT, tcap.Verbosity.VERBOSE]
    log.metadata("train.loss", {"unit": ""})
    for i in range(3):
        log.log((1, i + 1), {"train.loss": 2.0 - i / 10, "train.ips": 100.0 + i}, echo=i == 2)
    log.close()
    out = capsys.readouterr().out.splitlines()
    printed = [line for line in out if line.startswith("TCAPPDLL")]
    assert len(printed) == 1 and "Epoch: 1 Iteration: 3" in printed[0]
    assert "train.loss : 1.8" in printed[0] and "train.ips : 102.0" in printed[0] and "rank : 0" in printed[0]
    first = tcap_records(log.tcap_path)
    assert [s for s, _ in first] == [(1, 1), (1, 2), (1, 3)]
    assert all(d["rank"] == 0 and "train.loss" in d and "train.ips" in d for _, d in first)
    text = Path(log.tcap_path).read_text()
    # a second segment (a resumed run) gets its own file; the first keeps every record
    again = MetricsLog(str(tmp_path / "metrics.jsonl"), rank=0)
    again.log((1, 4), {"train.loss": 1.6})
    again.close()
    assert Path(log.tcap_path).read_text() == text
    segs = tcap_segments(str(tmp_path))
    assert [Path(p).name for p in segs] == ["metrics.tcap.json", "metrics.tcap.1.json"]
    assert [s for s, _ in tcap_records(segs[1])] == [(1, 4)]
    # arcbench's own DLLL lines carry rank too
    dlll = [json.loads(line[5:]) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["data"]["rank"] == 0 for r in dlll if r["type"] == "LOG") and len(dlll) == 5


def test_without_the_library_only_dlll_is_written(tmp_path, monkeypatch):
    from arcbench.record.metrics_log import MetricsLog

    monkeypatch.setenv("ARCBENCH_TCAP_DLLOGGER", "0")
    log = MetricsLog(str(tmp_path / "metrics.jsonl"))
    log.log((1, 1), {"train.loss": 1.0})
    log.close()
    assert not log.echoes and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


# ------------------------------------------------------------------ runs
def _run(args, expect=0):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", "cpu", "--workers", "0",
                                       "--eval-batch-size", "16"] + args)
    assert result.exit_code == expect, result.output + repr(result.exception)
    return result


def _dlll(run_dir):
    return [json.loads(line[5:]) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_recorded_resumed_and_reported_run_keeps_every_tcap_record(faces, tmp_path, tiny, tcap):
    from arcbench.record.metrics_log import tcap_segments

    out = tmp_path / "runs"
    common = ["--backbone", "tiny", "--epochs", "2", "--batch-size", "8", "--log-interval", "4", "--quiet",
              *data_args(faces)]
    tiny.INTERRUPT_AT = 9  # SIGINT in step 9: the run stops there, then resumes
    _run([*common, "--out", str(out)], expect=130)
    rd = next(out.iterdir())
    segs = tcap_segments(str(rd))
    assert len(segs) == 1
    before = Path(segs[0]).read_text()
    assert len(tcap_records(segs[0])) >= 9
    tiny.INTERRUPT_AT = None
    _run(["--resume", str(rd), "--quiet"])
    segs = tcap_segments(str(rd))
    assert len(segs) == 2 and Path(segs[0]).read_text() == before  # resume truncated nothing
    tcap_steps = {}
    for seg in segs:
        for step, data in tcap_records(seg):
            assert data["rank"] == 0
            if len(step) == 2:
                assert "train.ips" in data and "train.total_ips" in data
                tcap_steps[step] = data["train.loss"]
    dlll_steps = {tuple(r["step"]): r["data"]["train.loss"] for r in _dlll(rd)
                  if r["type"] == "LOG" and len(r["step"]) == 2}
    assert sorted(tcap_steps) == sorted(dlll_steps) == [(e, i) for e in (1, 2) for i in range(1, 7)]
    for step, loss in dlll_steps.items():
        assert tcap_steps[step] == pytest.approx(loss, rel=1e-12)
    assert all(r["data"]["rank"] == 0 for r in _dlll(rd) if r["type"] == "LOG")
    # the report still sees the whole run
    rep = CliRunner().invoke(main, ["report", str(out), "--format", "json"])
    assert rep.exit_code == 0, rep.output
    (row,) = json.loads(rep.output)["runs"]
    assert row["steps"] == 12 and row["status"] == "completed"


def test_stdout_lines_only_without_a_progress_bar(faces, tmp_path, tiny, tcap, monkeypatch):
    common = ["--backbone", "tiny", "--epochs", "1", "--batch-size", "8", "--log-interval", "2", *data_args(faces)]
    plain = _run([*common, "--out", str(tmp_path / "a")]).output
    lines = [line for line in plain.splitlines() if line.startswith("TCAPPDLL")]
    assert len(lines) == 3  # 6 steps, one line per log interval
    assert all("train.loss :" in line and "train.ips :" in line and "rank : 0" in line for line in lines)
    assert "DLLL epoch" not in plain  # not printed twice

    from arcbench.train import trainer as train

    class Bar:
        def update(self, n): pass
        def set_postfix(self, **kw): pass
        def close(self): pass

    monkeypatch.setattr(train.Trainer, "_progress", lambda self, steps: Bar())
    barred = _run([*common, "--out", str(tmp_path / "b")]).output
    assert "TCAPPDLL" not in barred and "DLLL epoch" not in barred
    quiet = _run([*common, "--quiet", "--out", str(tmp_path / "c")]).output
    assert "TCAPPDLL" not in quiet
