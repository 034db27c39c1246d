"""What `arcbench run` tells a person: help that matches the defaults, the resume command after Ctrl-C,
a line while the synthetic set is generated, and an accuracy plot that is readable with one verification."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from arcbench.cli import main


def _params(*args):
    from arcbench.cli.run import run_cmd

    ctx = run_cmd.make_context("run", list(args))
    return ctx.params


def test_run_help_about_verification_agrees_with_the_defaults():
    from arcbench.cli.run import build_config

    text = " ".join(CliRunner().invoke(main, ["run", "--help"]).stdout.split())
    assert "verify after each epoch" not in text
    assert "verifies once, at the end, on held-out synthetic identities" in text
    assert "With your own --train-data it verifies after every epoch" in text
    assert build_config(_params()).eval.eval_every == 0  # the embedded set: once at the end
    assert build_config(_params("--train-data", "faces")).eval.eval_every == 1  # own data: every epoch
    assert build_config(_params("--eval-every", "2")).eval.eval_every == 2


def test_interrupted_message_names_the_run_and_wipes_the_echoed_ctrl_c():
    from arcbench.cli.run import interrupted_message

    msg = interrupted_message("/data/runs/my run", tty=True)
    assert msg.startswith("\r\x1b[K") and "^" not in msg
    assert msg.splitlines()[-1] == "  arcbench run --resume '/data/runs/my run'"
    plain = interrupted_message("/data/runs/r1", tty=False)
    assert "\x1b" not in plain and "\r" not in plain and plain.endswith("arcbench run --resume /data/runs/r1")


def test_ctrl_c_prints_the_exact_resume_command(tmp_path, monkeypatch):
    import arcbench.run.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("signal 2")

    monkeypatch.setattr(runner, "_execute", interrupted)
    res = CliRunner().invoke(main, ["run", "--train-data", "synthetic", "--device", "cpu", "--out",
                                    str(tmp_path / "runs"), "--run-id", "r1", "--max-steps", "1", "--quiet"])
    assert res.exit_code == 130, res.output
    run_dir = str(tmp_path / "runs" / "r1")
    assert os.path.isdir(run_dir)
    assert f"arcbench run --resume {run_dir}" in res.stderr
    assert "Traceback" not in res.output


def test_generating_the_synthetic_set_says_so(tmp_path):
    from arcbench.data import synth

    tiny = dict(identities=3, images_per_identity=2, verify_identities=20, verify_images=3, pairs=2)
    lines = []
    path = synth.default_dataset(tmp_path / "cache", log=lines.append, **tiny)
    assert len(lines) == 2
    assert lines[0].startswith("arcbench: generating the synthetic face set once (3 identities x 2 images")
    assert str(path) in lines[0] and "ready in" in lines[1]
    lines.clear()
    assert synth.default_dataset(tmp_path / "cache", log=lines.append, **tiny) == path
    assert lines == []  # cached: nothing to say


def test_run_passes_the_generation_line_to_stdout(tmp_path, monkeypatch, capsys):
    import arcbench.data.synth as synth
    from arcbench.config import RunConfig
    from arcbench.run.runner import resolve_data

    def fake(cache_dir=None, progress=None, log=None, **params):
        if log:
            log("arcbench: generating the synthetic face set once (...)")
        return tmp_path

    monkeypatch.setattr(synth, "default_dataset", fake)
    cfg = resolve_data(RunConfig())
    assert cfg.data.train_data == os.path.join(str(tmp_path), "train")
    assert "generating the synthetic face set" in capsys.readouterr().out
    resolve_data(RunConfig(quiet=True))
    assert capsys.readouterr().out == ""


def test_one_verification_is_drawn_as_a_labelled_value(tmp_path):
    from arcbench.record.plots import lines_figure, plot_lines

    fig = lines_figure({"verification accuracy": ([3], [0.899])}, title="Verification accuracy (10-fold)",
                       xlabel="epoch", ylabel="accuracy")
    ax = fig.axes[0]
    assert len(ax.lines) == 0 and not ax.axison  # no one-point curve on a meaningless axis
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "verification accuracy: 0.8990" in texts and "epoch 3" in texts
    assert "one measurement" in ax.get_title()
    # several verifications stay a curve
    fig = lines_figure({"verification accuracy": ([1, 2, 3], [0.7, 0.8, 0.9])}, xlabel="epoch")
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[0].texts) == 0
    out = tmp_path / "accuracy.png"
    plot_lines({"verification accuracy": ([3], [0.899])}, out, title="t", xlabel="epoch")
    assert out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("value, text", [(0.5, "0.5000"), (123.456, "123.5")])
def test_value_text(value, text):
    from arcbench.record.plots import _value_text

    assert _value_text(value) == text


def test_ctrl_c_is_not_echoed_as_caret_c_while_the_bar_is_drawn(monkeypatch):
    termios = pytest.importorskip("termios")
    pty = pytest.importorskip("pty")
    from arcbench.cli import run as run_cli

    master, slave = pty.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ECHOCTL
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        # not this process's controlling terminal: a background job must leave it alone
        assert run_cli.echoctl_off(slave) is None
        assert termios.tcgetattr(slave)[3] & termios.ECHOCTL
        old = run_cli.echoctl_off(slave, foreground_only=False)
        assert old is not None and not termios.tcgetattr(slave)[3] & termios.ECHOCTL
        termios.tcsetattr(slave, termios.TCSANOW, old)

        class Stdin:
            def fileno(self):
                return slave

        monkeypatch.setattr(run_cli.sys, "stdin", Stdin())
        real = run_cli.echoctl_off
        monkeypatch.setattr(run_cli, "echoctl_off", lambda fd: real(fd, foreground_only=False))
        with run_cli.no_ctrl_c_echo():
            assert not termios.tcgetattr(slave)[3] & termios.ECHOCTL
        assert termios.tcgetattr(slave)[3] & termios.ECHOCTL  # restored
    finally:
        os.close(master)
        os.close(slave)


def test_piped_output_says_where_the_run_is_with_an_eta(tmp_path):
    """Not a terminal: a line after the first step and at each epoch's end, with an ETA for the whole run."""
    import subprocess
    import sys

    from arcbench.plugin_manager import PLUGIN_MODULES_ENV

    env = {k: v for k, v in os.environ.items() if k != PLUGIN_MODULES_ENV}  # no --plugin left by other tests
    p = subprocess.run([sys.executable, "-m", "arcbench", "run", "--device", "cpu", "--train-data", "synthetic",
                        "--synthetic-classes", "10", "--synthetic-steps", "3", "--epochs", "2", "--batch-size", "4",
                        "--backbone", "mobilenetv1", "--log-interval", "50", "--out", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("arcbench: ") and "to go" in ln]
    assert len(lines) == 3, p.stdout
    assert lines[0].startswith("arcbench: first step done at step 1/6, ")
    assert lines[1].startswith("arcbench: epoch 1/2 done (loss ") and " at step 3/6, " in lines[1]
    assert lines[2].startswith("arcbench: epoch 2/2 done") and lines[2].endswith("about 0 s to go")
    first_log = p.stdout.index(lines[0])
    assert first_log < p.stdout.index("DLLL")  # before the first interval's log line
