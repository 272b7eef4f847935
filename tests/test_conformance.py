"""Every registered method passes nlbench.testing.check_method (engine run, predictions, state round trip)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import Tensor

import nlbench
from nlbench import Batch, Method, Phase
from nlbench.plugins import get_registry
from nlbench.testing import CHECKS, ConformanceError, check_method

# timm's 0.4M-parameter test ResNet keeps the check fast and proves no method assumes ResNet-18's
# 512-d feature; older timm releases lack it, then the real backbone is used.
BACKBONE = "test_resnet" if "test_resnet" in timm.list_models("test_resnet*") else "resnet18"


@pytest.mark.parametrize("name", sorted(get_registry().methods))
def test_registered_method_conforms(name: str, tmp_path: Path) -> None:
    report = check_method(get_registry().method(name), tmp_path=tmp_path, backbone=BACKBONE)
    assert report.result["method"] == name
    assert (report.run_path / "result.json").is_file()


def test_hparams_are_passed_through(tmp_path: Path, capsys) -> None:
    jocor = get_registry().method("jocor")
    report = check_method(jocor, jocor.HParams(co_lambda=0.5), tmp_path=tmp_path, backbone=BACKBONE, epochs=1)
    assert report.result["hparams"]["co_lambda"] == 0.5
    # One line says what was checked, not the result's JSON: printed, and as the report's repr.
    assert report.checks == list(CHECKS)
    printed = capsys.readouterr().out
    assert printed.startswith(f"check_method(jocor): {len(CHECKS)} checks passed: {CHECKS[0]}; ")
    assert printed.count("\n") == 1 and "co_lambda" not in printed
    assert repr(report) == f"ConformanceReport({len(CHECKS)} checks passed, run in {report.run_path})"


class ForgetfulMethod(Method):
    """A broken plugin: its predictions depend on a buffer that state_dict does not save."""

    name = "forgetful"

    def build(self, ctx) -> None:
        super().build(ctx)
        self.net = ctx.backbone()
        self.optimizer = ctx.optimizer([self.net])
        self.shift = torch.zeros(ctx.num_classes)

    def train_step(self, batch: Batch, phase: Phase, epoch: int) -> dict[str, Tensor]:
        loss = torch.nn.functional.cross_entropy(self.net(batch.x).float(), batch.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        self.optimizer.step()
        self.shift = self.shift + torch.arange(self.ctx.num_classes, dtype=torch.float32) * 100
        return {"loss": loss.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x).float() + self.shift


def test_check_catches_state_that_is_not_saved(tmp_path: Path) -> None:
    assert issubclass(ForgetfulMethod, nlbench.Method)
    with pytest.raises(ConformanceError, match="state_dict") as caught:
        check_method(ForgetfulMethod, tmp_path=tmp_path, backbone=BACKBONE, epochs=1)
    # named: the fifth check, after the four it passed
    assert str(caught.value).startswith("check 5 of 8 (the checkpoint reproduces the last test accuracies) failed: ")
