"""mcgenref.runtime: devices, the one Autocast form, torchrun set-up / error sharing / tear-down."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from mcgenref import runtime
from mcgenref.errors import ConfigError, InputError, McGenRefError, OutputError
from mcgenref.runtime import Autocast, Distributed

from .conftest import torchrun_cpu


def test_resolve_device_cpu_auto_and_bad_names() -> None:
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert runtime.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "mps", "cuda:x"):
        with pytest.raises(ConfigError, match="expected auto, cpu or cuda"):
            runtime.resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_resolve_device_cuda_without_a_gpu_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        runtime.resolve_device("cuda")


def test_autocast_choice_per_device_and_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    for amp in ("auto", "bf16", "fp16", "none"):
        assert Autocast.for_device(cpu, amp) == Autocast("cpu", None)  # CPU: always fp32
    assert Autocast.for_device(cuda, "none").dtype is None
    assert Autocast.for_device(cuda, "fp16").dtype == torch.float16
    assert Autocast.for_device(cuda, "bf16").dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert Autocast.for_device(cuda, "auto").dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert Autocast.for_device(cuda, "auto").dtype == torch.float16  # with loss scaling in training


def test_autocast_context_really_changes_the_precision() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with Autocast("cpu", None)():
        assert (a @ b).dtype == torch.float32
    assert not Autocast("cpu").enabled
    reduced = Autocast("cpu", torch.bfloat16)
    assert reduced.enabled
    with reduced():
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32  # only inside the context


def test_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    ddp = runtime.setup_distributed()
    assert ddp == Distributed() and ddp.is_main and not ddp.owns_group
    assert runtime.is_main_process()
    assert runtime.gather({"x": 1}, ddp) == [{"x": 1}]
    own = InputError("bad")
    assert runtime.share_error(own, ddp) is own
    assert runtime.share_error(None, ddp) is None
    assert runtime.rank_device("auto", ddp) == "auto"
    runtime.teardown_distributed(ddp)  # nothing to tear down: no error
    monkeypatch.setenv("RANK", "1")
    assert not runtime.is_main_process()
    assert not Distributed(rank=1, world_size=2).is_main


def test_error_records_rebuild_the_first_failure() -> None:
    assert runtime.error_record(None) is None
    assert runtime.error_record(OutputError("disk full")) == ("OutputError", "disk full")
    rebuilt = runtime.error_from_records([None, ("OutputError", "disk full"), ("InputError", "later")])
    assert type(rebuilt) is OutputError and str(rebuilt) == "disk full"
    other = runtime.error_from_records([("ZeroDivisionError", "odd")])
    assert type(other) is McGenRefError and str(other) == "odd"
    assert runtime.error_from_records([None, None]) is None


SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from mcgenref.errors import OutputError
    from mcgenref import runtime

    ddp = runtime.setup_distributed("gloo")
    # rank 1 alone fails (as when only rank 0 checks a folder): every rank must learn of it
    error = OutputError(f"rank {ddp.rank} cannot write") if ddp.rank == 1 else None
    shared = runtime.share_error(error, ddp)
    everyone = runtime.gather(ddp.rank * 10, ddp)
    # one file per rank: two ranks printing to one pipe can interleave their lines
    record = {"rank": ddp.rank, "world_size": ddp.world_size, "owns": ddp.owns_group,
              "main": runtime.is_main_process(), "kind": type(shared).__name__,
              "error": str(shared), "gathered": everyone}
    Path(sys.argv[1], f"rank{ddp.rank}.json").write_text(json.dumps(record))
    runtime.teardown_distributed(ddp)
''')


def test_two_torchrun_ranks_share_one_ranks_error(tmp_path: Path) -> None:
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    result = torchrun_cpu(script, [str(tmp_path)], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in lines] == [0, 1]
    for r in lines:
        assert r["world_size"] == 2 and r["owns"]
        assert r["kind"] == "OutputError" and r["error"] == "rank 1 cannot write"
        assert r["gathered"] == [0, 10]
    assert [r["main"] for r in lines] == [True, False]
