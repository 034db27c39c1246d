"""`arcbench report`: every format, --check exit codes, --group-by, the self-contained HTML file."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from report_fixtures import make_run, metrics_lines  # noqa: E402

from arcbench.cli import main  # noqa: E402

# a 1x1 PNG, enough to check that roc.png is embedded
PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    losses = [5.0 - 0.2 * i for i in range(10)]
    d = make_run(root, "sdaa-ok", device="sdaa", lfw_accuracy=0.9850, amp_speedup=1.7, throughput_median=900.0,
                 metrics=metrics_lines(losses, acc=[0.97, 0.985]))
    os.makedirs(os.path.join(d, "plots"))
    with open(os.path.join(d, "plots", "roc.png"), "wb") as fh:
        fh.write(PNG_1x1)
    make_run(root, "cuda-low", device="cuda", lfw_accuracy=0.9700, nproc=1, throughput_median=1500.0)
    # batch_size is the global batch: 96 per process, as `bench --nproc 1,2` keeps it (the scaling chart
    # plots runs of one batch per process)
    make_run(root, "cuda-x2", device="cuda", lfw_accuracy=0.9860, nproc=2, batch_size=192, throughput_median=2900.0)
    make_run(root, "cpu-synth", synthetic=True, train_set="synthetic-faces", eval_set="synthetic-faces",
             lfw_accuracy=0.55, amp_speedup=0.8, metrics=metrics_lines(losses))
    make_run(root, "odd <b>&name", backbone="ghostfacenet", lfw_accuracy=0.99, reason="<script>alert(1)</script>")
    return root


def invoke(*args, **kw):
    return CliRunner().invoke(main, ["report", *map(str, args)], **kw)


def test_table_and_check_exit_codes(runs, tmp_path):
    res = invoke(runs)
    assert res.exit_code == 0, res.output
    assert "PASS" in res.stdout and "FAIL" in res.stdout and "n/a (synthetic)" in res.stdout
    assert "no reference" in res.stdout and "98.50%" in res.stdout
    res = invoke(runs, "--check")
    assert res.exit_code == 1 and "cuda-low" in res.stderr
    ok = tmp_path / "ok"
    make_run(ok, "good", lfw_accuracy=0.985)
    make_run(ok, "synthetic-only", synthetic=True, train_set="synthetic", lfw_accuracy=0.1)
    res = invoke(ok, "--check")
    assert res.exit_code == 0 and "1 PASS, 0 FAIL" in res.stderr


def test_missing_runs_dir_is_a_one_line_error(tmp_path, monkeypatch):
    res = invoke(tmp_path / "nope")
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "runs directory not found" in res.stderr
    monkeypatch.chdir(tmp_path)  # no ./runs either
    res = invoke()
    assert res.exit_code == 2 and "runs: runs directory not found" in res.stderr


def test_md_matches_the_model_zoo_readme_tables(runs):
    res = invoke(runs, "--format", "md")
    md = res.stdout
    assert "| Chip | Cards | Model | AMP | Batch size | Shape |" in md
    assert "| SDAA | 1 | arcface | yes | 96 | 112*112 |" in md
    assert "| Train set | Backbone | Weights | Test set | Input size | Accuracy |" in md
    assert "| CASIA-WebFace | mobilefacenet | - | LFW | 112x112 | 98.50% |" in md
    assert "synthetic-faces | mobilefacenet | - | synthetic-faces | 112x112 | 55.00% |" in md
    assert "odd <b>&name" in md and "| FAIL |" in md
    zh = invoke(runs, "--format", "md", "--lang", "zh").stdout
    assert "| 芯片 | 卡 | 模型 | 混合精度 | Batch size | Shape |" in zh and "| SDAA | 1 | arcface | 是 | 96 | 112*112 |" in zh
    assert "| 训练数据集 | backbone | 权值文件名称 | 测试数据集 | 输入图片大小 | accuracy |" in zh


def test_csv_and_json_carry_every_column(runs, tmp_path):
    from arcbench.reports.runs import ALL_COLUMNS

    rows = list(csv.DictReader(io.StringIO(invoke(runs, "--format", "csv").stdout)))
    assert list(rows[0].keys())[: len(ALL_COLUMNS)] == ALL_COLUMNS and len(rows) == 5
    by_id = {r["run_id"]: r for r in rows}
    assert by_id["sdaa-ok"]["reference_check"] == "PASS" and by_id["sdaa-ok"]["reference"] == "98.48"
    out = tmp_path / "out" / "report.json"
    res = invoke(runs, "--format", "json", "--out", out)
    assert res.exit_code == 0 and res.stdout.strip() == str(out)
    body = json.loads(out.read_text())
    run = {r["run_id"]: r for r in body["runs"]}["cpu-synth"]
    assert run["synthetic"] is True and run["reference"] is None and run["reference_check"] == "n/a (synthetic)"
    assert body["problems"] == []


def test_group_by_aggregates(runs):
    res = invoke(runs, "--group-by", "device,backbone", "--format", "json")
    groups = {(g["device"], g["backbone"], g["synthetic"]): g for g in json.loads(res.stdout)["groups"]}
    cuda = groups[("cuda", "mobilefacenet", "no")]
    assert cuda["runs"] == 2 and cuda["throughput_median"] == 2200.0
    assert cuda["lfw_accuracy"] == pytest.approx(0.978) and (cuda["pass"], cuda["fail"]) == (1, 1)
    res = invoke(runs, "--group-by", "device,colour")
    assert res.exit_code == 2 and "unknown column(s) colour" in res.stderr


class _Checker(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.imgs, self.external, self.scripts = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            v = attrs.get(key) or ""
            if v and not (v.startswith("data:") or v.startswith("#")):
                self.external.append(v)
        if tag not in ("img", "meta", "br", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


def test_html_is_self_contained_escaped_and_parses(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(runs, "--format", "html")
    assert res.exit_code == 0, res.output
    path = runs / "arcbench-report.html"  # by default beside the runs it reports on, printed in full
    assert res.stdout.strip() == str(path) and path.is_file() and not (tmp_path / "arcbench-report.html").exists()
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and 'src="http' not in text and "https://" not in text
    p = _Checker()
    p.feed(text)
    p.close()
    assert p.stack == [] and p.external == [] and p.scripts == 0
    # throughput, AMP and scaling charts, two runs' curves, and the embedded roc.png
    assert len(p.imgs) >= 6 and all(s.startswith("data:image/png;base64,") for s in p.imgs)
    import base64

    assert base64.b64encode(PNG_1x1).decode() in text
    assert "odd &lt;b&gt;&amp;name" in text and "<script>alert" not in text
    assert 'title="&lt;script&gt;alert(1)&lt;/script&gt;"' in text  # the reason, as the status cell's tooltip
    assert 'class="v-pass">PASS' in text and 'class="v-fail">FAIL' in text
    for section in ("Throughput", "AMP speedup", "Scaling", "Loss and accuracy curves", "ROC curves", "Systems",
                    "Reference table"):
        assert f"<h2>{section}</h2>" in text
    assert "SDAA test card" in text  # the system description


def test_help_explains_every_option():
    res = CliRunner().invoke(main, ["report", "--help"])
    assert res.exit_code == 0
    for opt in ("--format", "--out", "--group-by", "--tolerance", "--check", "--align", "--compare", "--threshold",
                "--import-log", "--import-to", "--import-meta", "--plot", "--references", "--lang"):
        assert opt in res.stdout
    assert "Exit status: 0 ok; 1 a --check failed; 2 a usage or input error." in res.stdout
