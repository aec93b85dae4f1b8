"""The ``pytorchfi-deepvigor`` command: every subcommand on a tiny zoo model, errors, resume."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pytorchfi_deepvigor.campaigns import faults
from pytorchfi_deepvigor.cli import _commands as commands
from pytorchfi_deepvigor.cli import main
from pytorchfi_deepvigor.results import LayerResult, VulnerabilityResult
from pytorchfi_deepvigor.zoo.models import build_model, list_models

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TINY = ["--width", "0.0625", "--epochs", "1", "--images", "8", "--no-progress"]
FI = ["--layers", "8", "--chunk", "500"]  # VGG-11's classifier at width 1/16: 10 x 32 weights


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cache dir holding VGG-11 at width 1/16 trained for one epoch (the `train` command)."""
    path = tmp_path_factory.mktemp("cache")
    assert main(["train", *TINY[:4], "--no-progress", "--cache-dir", str(path)]) == 0
    return str(path)


def tiny(cache: str, *more: str) -> list[str]:
    return [*TINY, "--cache-dir", cache, *more]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_caches_and_prints_accuracy(cache, tmp_path, capsys):
    capsys.readouterr()
    assert main(["train", *TINY[:4], "--cache-dir", cache, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "loaded from the cache" in out
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["config"]["epochs"] == 1 and 0.0 <= record["test_accuracy"] <= 1.0
    assert len(list((Path(cache) / "zoo").glob("vgg11-w0.0625-*.pt"))) == 1


def test_zoo_lists_models_and_cached_state(tmp_path, capsys):
    assert main(["zoo", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "width", "epochs"]
    listed = {line.split()[0] for line in lines[1 : 1 + len(list_models())]}
    assert listed == set(list_models()) >= {
        "mobilenetv2", "resnet18", "resnet34", "vgg11", "vgg16",
    }  # fmt: skip
    assert main(["zoo", "--model", "vgg11", "--width", "0.0625"]) == 0
    out = capsys.readouterr().out
    assert "9 injectable layers" in out and "classifier" in out and "[4, 1, 3, 3]" in out


def test_analyze_writes_every_file(cache, tmp_path, capsys):
    out = tmp_path / "an"
    argv = ["analyze", *tiny(cache, "--layers", "0,8", "--out", str(out))]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "LVF act" in stdout and "LVF weights" in stdout and "MVF total (Eq. 15)" in stdout
    result = VulnerabilityResult.from_json(out / "result.json")
    assert result.method == "deepvigor" and result.n_images == 8
    assert result.options["sampling"] == 0.1 and result.options["run"]["command"][1] == "analyze"
    assert {(x.layer_num, x.target) for x in result.layers} == {
        (0, "activations"), (0, "weights"), (8, "activations"), (8, "weights"),
    }  # fmt: skip
    layers = rows(out / "layers.csv")
    assert [(r["layer"], r["target"]) for r in layers] == [
        ("0", "activations"), ("0", "weights"), ("8", "activations"), ("8", "weights"),
    ]  # fmt: skip
    assert float(layers[0]["lvf"]) == result.layer(0, "activations").lvf
    channels = rows(out / "channels.csv")
    assert len(channels) == sum(len(x.channels) for x in result.layers)
    for png in ("lvf.png", "mvf.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_int8_format_quantizes_and_records_its_words(cache, tmp_path, capsys):
    pytest.importorskip("torch.ao.quantization.quantize_fx", reason="no torch.ao.quantization")
    out = tmp_path / "an8"
    argv = ["analyze", *tiny(cache, "--format", "int8", "--layers", "0,8", "--out", str(out))]
    assert main(argv) == 0
    assert "fault model int8; int8 words" in capsys.readouterr().out
    result = VulnerabilityResult.from_json(out / "result.json")
    assert result.options["fault_model"] == "int8" and result.options["number_format"] == "int8"
    assert {r["field"] for r in rows(out / "bits.csv")} == {"int8"}
    fi = tmp_path / "fi8"
    argv = ["inject", *tiny(cache, "--format", "int8", *FI, "--out", str(fi))]
    assert main(argv) == 0
    assert VulnerabilityResult.from_json(fi / "result.json").options["fault_model"] == "int8"
    argv = ["analyze", *tiny(cache, "--format", "int8", "--fault-model", "mbu2", "--layers", "0")]
    assert main([*argv, "--out", str(tmp_path / "bad")]) == 1
    assert "'int8' fault model" in capsys.readouterr().err


def test_demo_prints_table_and_total_mvf(cache, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", *tiny(cache, "--layers", "8", "--out", str(out))]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("DeepVigor+ demo: vgg11 (width 0.0625)")
    assert "total MVF (paper Eq. 15): " in stdout and "demo finished in" in stdout
    assert {p.name for p in out.iterdir()} >= {"result.json", "layers.csv", "lvf.png", "mvf.png"}


def test_harden_plans_verifies_and_writes_its_files(cache, tmp_path, capsys):
    out = tmp_path / "harden"
    more = ("--budget", "30%", "--mechanisms", "tmr,ecc,clamp", "--calibration", "16",
            "--holdout", "16", "--e", "0.1", "--curve", "0.1,0.3", "--out", str(out))  # fmt: skip
    assert main(["harden", *tiny(cache, *more)]) == 0
    stdout = capsys.readouterr().out
    assert "clamps profiled on 16 calibration images" in stdout
    assert "planner plan at 30%" in stdout and "predicted MVF" in stdout and "SFI" in stdout
    assert "clean top-1 kept on" in stdout
    names = {p.name for p in out.iterdir()}
    assert names >= {"plan.json", "protection.csv", "verification.csv", "pareto.csv",
                     "pareto.png", "run.json", "analysis"}  # fmt: skip
    plan = json.loads((out / "plan.json").read_text())
    assert plan["budget"] == 0.3 and "clamp" in plan["mechanisms"] and plan["ranges"]
    assert plan["overhead_macs"] <= 0.3 and plan["overhead_memory"] <= 0.3


@pytest.mark.parametrize(
    "more, message",
    [
        (["--budget", "300%"], "budget '300%' is outside 0..200%"),
        (["--mechanisms", "tmr,dmr"], "unknown mechanisms ['dmr']"),
        (["--sampling", "2"], "expected a ratio in (0, 1]"),
    ],
    ids=["budget", "mechanism", "sampling"],
)
def test_harden_bad_options_exit_2(more, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["harden", *more])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.fixture(scope="module")
def fi_run(cache, tmp_path_factory) -> Path:
    """An uninterrupted exhaustive weight campaign on the classifier (21 chunks of 500 faults)."""
    out = tmp_path_factory.mktemp("fi")
    argv = ["inject", *tiny(cache, *FI, "--out", str(out))]
    assert main(argv) == 0
    return out


def test_inject_and_compare_write_their_files(cache, fi_run, tmp_path, capsys):
    fi = VulnerabilityResult.from_json(fi_run / "result.json")
    assert fi.method == "exhaustive" and fi.layers[0].n_faults == 10 * 32 * 32
    assert fi.layers[0].counts.total == 10 * 32 * 32 * 8
    assert rows(fi_run / "layers.csv")[0]["faults"] == "10240"
    an = tmp_path / "an"
    assert main(["analyze", *tiny(cache, "--layers", "8", "--target", "weights",
                                  "--sampling", "complete", "--out", str(an))]) == 0  # fmt: skip
    capsys.readouterr()
    cmp = tmp_path / "cmp"
    assert main(["compare", str(an / "result.json"), str(fi_run / "result.json"),
                 "--out", str(cmp)]) == 0  # fmt: skip
    stdout = capsys.readouterr().out
    assert "weights" in stdout and "Spearman" in stdout
    data = json.loads((cmp / "comparison.json").read_text())
    assert data["format"] == "pytorchfi-deepvigor comparison" and data["schema_version"] == 1
    assert data["targets"]["weights"]["n_channels"] == 10 and len(data["pairs"]) == 10
    assert len(rows(cmp / "pairs.csv")) == 10 and (cmp / "cvf_scatter.png").stat().st_size > 0


def test_inject_sfi_reports_margins(cache, tmp_path, capsys):
    out = tmp_path / "sfi"
    argv = ["inject", *tiny(cache, "--layers", "8", "--campaign", "layer", "--e", "0.05")]
    assert main([*argv, "--out", str(out)]) == 0
    assert "margin" in capsys.readouterr().out
    result = VulnerabilityResult.from_json(out / "result.json")
    assert result.method == "sfi-layer" and result.layers[0].margin is not None
    assert rows(out / "layers.csv")[0]["margin"] != ""


def _interrupt_on_call(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the campaign's per-fault evaluation raise KeyboardInterrupt on its ``call``-th chunk."""
    original, calls = faults.FaultEvaluator.counts, []

    def counts(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(faults.FaultEvaluator, "counts", counts)


def _same_layers(a: VulnerabilityResult, b: VulnerabilityResult) -> None:
    assert [(x.layer_num, x.target, x.channels, x.cvf, x.lvf, x.counts) for x in a.layers] == [
        (x.layer_num, x.target, x.channels, x.cvf, x.lvf, x.counts) for x in b.layers
    ]


def test_ctrl_c_saves_progress_and_the_printed_command_resumes(
    cache, fi_run, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "fi"
    argv = ["inject", *tiny(cache, *FI, "--out", str(out))]
    _interrupt_on_call(monkeypatch, 4)
    assert main([*argv, "--restart"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    log = out / "progress" / "exhaustive-weights.progress.jsonl"
    assert len(log.read_text().splitlines()) == 1 + 3  # header and 3 finished chunks
    assert err[-1].startswith("resume with: cd ") and "--restart" not in err[-1]
    monkeypatch.undo()
    command = shlex.split(err[-1].split(" && ", 1)[1])
    assert command[0] == "pytorchfi-deepvigor" and main(command[1:]) == 0
    _same_layers(VulnerabilityResult.from_json(out / "result.json"),
                 VulnerabilityResult.from_json(fi_run / "result.json"))  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _records(out: Path) -> int:
    """Finished chunks in the progress file(s) under ``out`` (any per-rank layout)."""
    logs = list(out.rglob("*.progress.jsonl"))
    return sum(max(0, len(f.read_text().splitlines()) - 1) for f in logs)


def test_sigint_to_a_running_inject_then_resume(cache, fi_run, tmp_path):
    # 10,240 fsync-ed chunks, so the signal lands mid-run; on a loaded machine the run may still
    # finish before the parent sees its records: then try again in a fresh folder (3 attempts)
    for attempt in range(3):
        out = tmp_path / f"fi{attempt}"
        argv = ["inject", *tiny(cache, *FI, "--chunk", "1", "--out", str(out))]
        # SIGINT as a shell gives it: default disposition, even if this test process (run in
        # the full suite) inherited or was left with SIGINT ignored, which the child would keep
        proc = subprocess.Popen([sys.executable, "-m", "pytorchfi_deepvigor", *argv], cwd=ROOT,
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=_default_sigint)  # fmt: skip
        try:
            while proc.poll() is None and _records(out) < 2:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        if proc.returncode != 0:
            break
    assert proc.returncode == 130, err
    log = out / "progress" / "exhaustive-weights.progress.jsonl"
    resume = err.strip().splitlines()[-1]
    assert resume.startswith(f"resume with: cd {ROOT} && {sys.executable} -m pytorchfi_deepvigor")
    done = _records(out)
    assert log.exists() and 0 < done < 10240 and "Traceback" not in err
    assert main(shlex.split(resume.split(" && ", 1)[1])[3:]) == 0
    _same_layers(VulnerabilityResult.from_json(out / "result.json"),
                 VulnerabilityResult.from_json(fi_run / "result.json"))  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["analyze", "--layers", "x"], "argument --layers: expected 'all' or layer numbers"),
        (["analyze", "--sampling", "1.5"], "expected 'complete' or a channel ratio in (0, 1]"),
        (["analyze", "--target", "bias"], "argument --target: invalid choice"),
        (["inject", "--campaign", "random"], "argument --campaign: invalid choice"),
        (["analyze", "--images", "0"], "argument --images: expected a positive integer"),
        (["compare", "a.json"], "the following arguments are required: b"),
        ([], "the following arguments are required: COMMAND"),
    ],
    ids=["layers", "sampling", "target", "campaign", "images", "compare-one-file", "no-command"],
)
def test_bad_command_lines_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    "more, message",
    [
        (["analyze", "--layers", "42"], "layer_num 42 out of range: the model has 9 injectable"),
        (["analyze", "--dataset", "cifar10", "--random-weights"], "--dataset cifar10 reads local files"),
        (["analyze", "--dataset", "mnist"], "a zoo model without --checkpoint is trained on the digits"),
        (["analyze", "--checkpoint", "missing.pt", "--model", "vgg11"], "missing.pt does not exist"),
        (["analyze", "--model", "torchvision:resnet18"], "has no trained weights offline"),
        (["inject", "--e", "0.1"], "--e and --t set the margin of SFI campaigns"),
        (["inject", "--campaign", "layer", "--e", "2"], "expected margin e in (0, 1), got 2.0"),
        (["compare", "missing-a.json", "missing-b.json"], "No such file or directory"),
        (["train", "--width", "-1"], "expected --width > 0, got -1"),
        (["zoo", "--threads", "-1"], "expected --threads >= 0, got -1"),
    ],
    ids=["layer-range", "no-data-root", "not-digits", "no-checkpoint", "torchvision", "e-exhaustive", "e-range",
         "compare-missing", "width", "threads"],
)  # fmt: skip
def test_invalid_values_exit_1_with_one_error_line(cache, more, message, tmp_path, capsys):
    argv = [*more, "--cache-dir", cache, "--no-progress"]
    if more[0] in ("analyze", "inject"):
        argv += [*TINY, "--out", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def _good_result(path: Path, n_images: int = 4) -> Path:
    layer = LayerResult(layer_num=0, name="fc", kind="Linear", target="weights", n_neurons=10,
                        n_weights=40, channels=(0, 1), cvf=(0.25, 0.5), lvf=0.375)  # fmt: skip
    VulnerabilityResult.from_layers("exhaustive", [layer], n_images=n_images).to_json(path)
    return path


def test_compare_warns_once_about_different_image_counts(tmp_path, capsys):
    a, b = _good_result(tmp_path / "a.json"), _good_result(tmp_path / "b.json", n_images=8)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    err = capsys.readouterr().err
    assert err == "warning: comparing results over different image counts: 4 and 8\n"
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["warnings"] == [err.strip().removeprefix("warning: ")]


@pytest.mark.parametrize(
    "content, reason",
    [
        (lambda text: text[: len(text) // 2], "is not valid JSON"),
        (lambda text: json.dumps({"format": "pytorchfi-deepvigor comparison", "schema_version": 1}),
         "this is a comparison (comparison.json, from 'compare --out'), not a result"),
        (lambda text: "[1, 2]", "expected a JSON object (a result), got a list"),
        (lambda text: re.sub(r'"schema_version": \d+', '"schema_version": "1"', text),
         "schema_version: expected an int >= 1, got '1'"),
    ],
    ids=["truncated", "comparison-json", "list", "string-schema-version"],
)  # fmt: skip
def test_compare_names_the_bad_file_and_why_in_one_line(content, reason, tmp_path, capsys):
    good = _good_result(tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text(content(good.read_text()))
    assert main(["compare", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: B (the second file) {bad} " in err
    assert reason in err and ("usable" in err) != (reason == "is not valid JSON")
    assert main(["compare", str(bad), str(good)]) == 1
    assert f"error: A (the first file) {bad}" in capsys.readouterr().err


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading a model fail the test: errors must come before any work."""

    def load_setup(args):
        raise AssertionError("the command started working before checking its options")

    monkeypatch.setattr(commands, "load_setup", load_setup)
    monkeypatch.setattr(commands, "train_zoo_model", load_setup)


@pytest.mark.parametrize("command", ["analyze", "inject", "demo", "train", "compare"])
@pytest.mark.parametrize(
    "out, message",
    [("afile", "--out {path} is a file, not a folder"),
     ("afile/sub", "cannot create --out {path}: Not a directory"),
     ("", "expected --out as a folder name, got an empty string")],
    ids=["file", "below-a-file", "empty"],
)  # fmt: skip
def test_output_folder_is_checked_before_any_work(command, out, message, tmp_path, no_work, capsys):
    (tmp_path / "afile").write_text("not a folder")
    path = str(tmp_path / out) if out else out
    argv = [command, "--out", path, "--no-progress"]
    if command == "compare":
        argv[1:1] = ["a.json", "b.json"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {message.format(path=path)}" in err, err


HOLD = """
import importlib.util, time
spec = importlib.util.spec_from_file_location("lock", {root!r} + "/pytorchfi_deepvigor/_lock.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)  # the lock module alone (stdlib only): no torch import
lock = module.FolderLock({folder!r}).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_run_on_the_same_out_names_the_holder(tmp_path, no_work, capsys):
    script = HOLD.format(root=str(ROOT), folder=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        for command in ("inject", "analyze"):
            assert main([command, "--out", str(tmp_path), "--no-progress"]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1
            assert f"error: --out {tmp_path} is in use by process {child.pid} on " in err
            assert "wait for that run to finish, stop it, or choose another --out" in err
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["analyze", "inject"])
def test_device_cuda_without_a_gpu_is_a_user_error(command, tmp_path, no_work, capsys):
    assert main([command, "--device", "cuda", "--out", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report it" not in err
    assert "error: device 'cuda' is not available here" in err and "use --device cpu" in err
    assert "device='cpu'" not in err


def _checkpoints(folder: Path) -> dict[str, Path]:
    model = build_model("vgg11", width=0.0625, in_channels=1)
    files = {"text": folder / "notes.pt", "module": folder / "whole.pt", "state": folder / "sd.pt"}
    files["text"].write_text("these are not weights\n")
    torch.save(model, files["module"])
    torch.save(model.state_dict(), files["state"])
    return files


@pytest.mark.parametrize(
    "kind, more, message",
    [
        ("text", ["--model", "vgg11"], "notes.pt is not a torch checkpoint: it is not a torch.save file"),
        ("module", ["--model", "vgg11"], "holds pickled Python objects (for example a whole "
                                         "nn.Module); give --allow-pickle if you trust the file"),
        ("state", [], "give --model NAME (see the 'zoo' command); only zoo cache files record"),
    ],
    ids=["text-file", "pickled-module", "no-model"],
)  # fmt: skip
def test_checkpoint_errors_name_cli_options(kind, more, message, tmp_path, capsys):
    path = _checkpoints(tmp_path)[kind]
    argv = ["analyze", "--checkpoint", str(path), *more, "--width", "0.0625", "--images", "2"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "allow_pickle" not in err and "list_models()" not in err


def test_a_damaged_cache_file_is_told_in_one_line_and_retrained(cache, tmp_path, capsys):
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    (path,) = (copy / "zoo").glob("vgg11-w0.0625-*.pt")
    path.write_bytes(b"\x00garbage" * 100)
    assert main(["train", *TINY[:4], "--no-progress", "--cache-dir", str(copy)]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    assert err.startswith("the cached vgg11 is damaged (") and "training it again" in err
    assert "it is not a torch.save file" in err
    assert "trained in" in out and "loaded from the cache" not in out
    assert main(["train", *TINY[:4], "--no-progress", "--cache-dir", str(copy)]) == 0
    assert "loaded from the cache" in capsys.readouterr().out


def test_a_failed_run_leaves_no_folder_it_created(cache, tmp_path, capsys):
    for command in ("analyze", "inject"):
        out = tmp_path / command
        argv = [command, *tiny(cache, "--layers", "42", "--out", str(out))]
        assert main(argv) == 1
        assert "layer_num 42 out of range" in capsys.readouterr().err
        assert not out.exists()
    assert main(["analyze", *tiny(cache, "--layers", "42", "--out", str(tmp_path))]) == 1
    assert tmp_path.is_dir()  # a folder the user had stays
