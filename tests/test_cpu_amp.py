"""train.cpu_amp: bf16 autocast and channels_last on the CPU only when asked for, everywhere when asked."""

from __future__ import annotations

import torch

from nlbench.context import uses_amp, uses_channels_last
from nlbench.plugins import get_registry
from nlbench.settings import TrainSettings
from nlbench.spec import RunRequest, resolve_spec
from nlbench.spec.config import Config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_the_cpu_computes_in_fp32_unless_cpu_amp_is_set_while_cuda_follows_amp():
    plain, cpu_bf16 = TrainSettings(), TrainSettings(cpu_amp=True)
    assert not uses_amp(plain, CPU) and not uses_channels_last(plain, CPU)
    assert uses_amp(cpu_bf16, CPU) and uses_channels_last(cpu_bf16, CPU)
    assert uses_amp(plain, CUDA) and uses_channels_last(plain, CUDA)
    assert not uses_amp(TrainSettings(amp=False, cpu_amp=True), CPU)  # amp = false switches bf16 off everywhere
    assert not uses_channels_last(TrainSettings(channels_last=False, cpu_amp=True), CPU)


def test_a_cpu_amp_run_trains_its_networks_and_batches_in_bf16_channels_last():
    from nlbench.train.assemble import assemble

    spec = resolve_spec(RunRequest(method="standard", dataset="synthfer", noise=0.2, seed=1,
                                   sets=["datasets.synthfer.options.train_size=40", "datasets.synthfer.options.test_size=8",
                                         "datasets.synthfer.options.size=16", "train.image_size=16",
                                         "train.cpu_amp=true"]), Config(), get_registry())
    run = assemble(spec, get_registry(), device=CPU)
    assert run.ctx.use_amp
    images = run.train_images.images[:4]
    x = run.augmenter.train(images, torch.Generator().manual_seed(0))
    assert x.is_contiguous(memory_format=torch.channels_last)
    network = next(m for m in run.method.modules())
    conv = next(p for p in network.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    with run.ctx.autocast():
        logits = network(x)
    assert logits.dtype == torch.bfloat16


def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path):
    from nlbench.environment import cpu_has_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bf16(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")  # AVX-512 alone emulates bf16
    assert cpu_has_bf16(info) is False
    info.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # ARMv8.6
    assert cpu_has_bf16(info) is True
    assert cpu_has_bf16(tmp_path / "absent") is None


def test_cpu_amp_on_a_cpu_without_bf16_says_it_will_be_slower(monkeypatch):
    import nlbench.train.assemble as assemble_module
    from nlbench.progress import Reporter

    messages: list[str] = []

    class Collect(Reporter):
        def message(self, text: str) -> None:
            messages.append(text)

    sets = ["datasets.synthfer.options.train_size=40", "datasets.synthfer.options.test_size=8",
            "datasets.synthfer.options.size=16", "train.image_size=16"]
    for cpu_amp, has_bf16 in ((True, False), (True, True), (False, False), (True, None)):
        monkeypatch.setattr(assemble_module, "cpu_has_bf16", lambda has=has_bf16: has)
        spec = resolve_spec(RunRequest(method="standard", dataset="synthfer", noise=0.2, seed=1,
                                       sets=[*sets, f"train.cpu_amp={str(cpu_amp).lower()}"]), Config(), get_registry())
        messages.clear()
        assemble_module.assemble(spec, get_registry(), device=CPU, reporter=Collect())
        warned = any("no bf16 instructions" in m and "train.cpu_amp=false" in m for m in messages)
        assert warned == (cpu_amp and has_bf16 is False)
