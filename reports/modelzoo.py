"""The SDAA model-zoo README layout: its setup and results tables, and the ``md`` report built on them.

The two tables (setup: Chip | Cards | Model | AMP | Batch size | Shape;
results: Train set | Backbone | Weights | Test set | Input size | Accuracy)
are shared by ``md`` and ``html`` so figures paste straight into a README —
English headers by default, the README's Chinese headers with ``lang="zh"``.
"""
from __future__ import annotations

from typing import List

import pandas as pd

from ..errors import ArcbenchError
from .render import md_frame, md_table, missing
from .runs import COLUMNS

#: the full runs table in md/html: every core column except the raw device name (shown in system info)
FULL_COLUMNS = [c for c in COLUMNS if c != "device_name"]

HEADERS = {
    "en": {"setup": ["Chip", "Cards", "Model", "AMP", "Batch size", "Shape"],
           "results": ["Train set", "Backbone", "Weights", "Test set", "Input size", "Accuracy"],
           "yes": "yes", "no": "no", "setup_title": "Setup", "results_title": "Results", "runs_title": "Runs"},
    "zh": {"setup": ["芯片", "卡", "模型", "混合精度", "Batch size", "Shape"],
           "results": ["训练数据集", "backbone", "权值文件名称", "测试数据集", "输入图片大小", "accuracy"],
           "yes": "是", "no": "否", "setup_title": "训练配置", "results_title": "训练结果量化指标",
           "runs_title": "全部运行"},
}


def _shape(v) -> int:
    return 112 if missing(v) else int(v)


def setup_rows(df: pd.DataFrame, lang: str = "en") -> List[list]:
    """Distinct training setups, README style: ``SDAA | 1 | arcface | yes | 96 | 112*112``."""
    h = HEADERS[lang]
    rows, seen = [], set()
    for r in df.to_dict("records"):
        if missing(r.get("device")):
            continue
        cards = (1 if missing(r.get("nproc")) else int(r["nproc"])) * (1 if missing(r.get("nnodes")) else int(r["nnodes"]))
        amp = r.get("amp")
        if missing(amp):
            amp = None if missing(r.get("precision")) else str(r["precision"]).lower() != "fp32"
        s = _shape(r.get("input_size"))
        row = [str(r["device"]).upper(), cards, "arcface" if missing(r.get("head")) else r["head"],
               "-" if amp is None else (h["yes"] if amp else h["no"]),
               "-" if missing(r.get("batch_size")) else int(r["batch_size"]), f"{s}*{s}"]
        key = tuple(str(x) for x in row)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return sorted(rows, key=lambda r: tuple(str(x).zfill(8) if isinstance(x, int) else str(x) for x in r))


def result_rows(df: pd.DataFrame) -> List[list]:
    """Runs with an accuracy, README style: ``CASIA-WebFace | mobilefacenet | w.pth | LFW | 112x112 | 98.48%``."""
    rows = []
    for r in df.to_dict("records"):
        if missing(r.get("lfw_accuracy")):
            continue
        train = "-" if missing(r.get("train_set")) else str(r["train_set"])
        if r.get("synthetic") is True and "synthetic" not in train.lower():
            train += " (synthetic)"
        s = _shape(r.get("input_size"))
        rows.append([train, "-" if missing(r.get("backbone")) else r["backbone"],
                     "-" if missing(r.get("weights")) else r["weights"],
                     "-" if missing(r.get("eval_set")) else r["eval_set"], f"{s}x{s}",
                     f"{float(r['lfw_accuracy']) * 100:.2f}%"])
    return rows


def markdown(df: pd.DataFrame, lang: str = "en", title: str = "arcbench report", note: str = "") -> str:
    if lang not in HEADERS:
        raise ArcbenchError(f"unknown language {lang!r}; known: {', '.join(HEADERS)}")
    h = HEADERS[lang]
    parts = [f"# {title}", ""]
    if note:
        parts += [note, ""]
    parts += [f"## {h['setup_title']}", "", md_table(h["setup"], setup_rows(df, lang)), "",
              f"## {h['results_title']}", "", md_table(h["results"], result_rows(df)), "",
              f"## {h['runs_title']}", "", md_frame(df, FULL_COLUMNS) if len(df) else "(no runs)", ""]
    return "\n".join(parts)
