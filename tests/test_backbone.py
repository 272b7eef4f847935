"""Pretrained checkpoints: the SCN/CCT MS-Celeb format, torchvision keys, and clear failures."""

from __future__ import annotations

import hashlib

import pytest
import torch

from conftest import TINY, read_result, run_dirs
from nlbench.errors import UsageError
from nlbench.train.backbone import BackboneFactory, create_backbone


def _msceleb_checkpoint(path, source):
    """Write a checkpoint the way the SCN/CCT MS-Celeb file is laid out."""
    state = {f"module.{k}": v.clone() for k, v in source.state_dict().items() if not k.startswith("fc.")}
    state["module.feature.weight"] = torch.randn(256, 512)
    state["module.feature.bias"] = torch.randn(256)
    state["module.fc.weight"] = torch.randn(1000, 256)  # face identities (87,020 in the real file)
    state["module.fc.bias"] = torch.randn(1000)
    torch.save({"state_dict": state, "epoch": 10}, path)


def test_msceleb_format_loads_every_backbone_weight(tmp_path):
    source = create_backbone("resnet18", 7)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)  # distinct from any fresh initialisation
    path = tmp_path / "res18_naive.pth_MSceleb.tar"
    _msceleb_checkpoint(path, source)
    factory = BackboneFactory("resnet18", 7, seed=0, pretrained=path)
    first, second = factory(), factory()
    for name, value in source.state_dict().items():
        if name.startswith("fc."):
            continue
        assert torch.equal(first.state_dict()[name], value), name
        assert torch.equal(second.state_dict()[name], value), name
    # the new classifiers are random and differ between networks
    assert not torch.equal(first.fc.weight, second.fc.weight)


def test_torchvision_keyed_file_loads(tmp_path):
    source = create_backbone("resnet18", 1000)
    path = tmp_path / "tv.pth"
    torch.save(source.state_dict(), path)  # fc is 1000-way: dropped, not a shape error
    net = BackboneFactory("resnet18", 8, seed=0, pretrained=path)()
    assert torch.equal(net.conv1.weight, source.conv1.weight) and net.fc.out_features == 8


def test_a_finished_runs_model_file_initialises_a_new_run_with_its_network(tmp_path):
    """model.pt of a run ({"method", "run_id", "weights": {name: state}}): its one network loads;
    a run deploying several networks is refused, naming them."""
    source = create_backbone("resnet18", 7)
    path = tmp_path / "model.pt"
    torch.save({"method": "standard", "run_id": "ab12", "weights": {"net": source.state_dict()}}, path)
    net = BackboneFactory("resnet18", 7, seed=0, pretrained=path)()
    assert torch.equal(net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    torch.save({"method": "coteaching", "run_id": "cd34",
                "weights": {"net1": source.state_dict(), "net2": source.state_dict()}}, path)
    with pytest.raises(UsageError, match=r"run cd34 \(coteaching\), which deploys 2 networks \(net1, net2\)"):
        BackboneFactory("resnet18", 7, seed=0, pretrained=path)()


def test_missing_backbone_weights_fail_naming_them(tmp_path):
    source = create_backbone("resnet18", 7)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("layer4.")}
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(UsageError, match=r"backbone weights unloaded \(layer4"):
        BackboneFactory("resnet18", 7, seed=0, pretrained=path)()


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="cannot read pretrained file"):
        BackboneFactory("resnet18", 7, seed=0, pretrained=path)


def test_run_records_the_checkpoint_sha256(cli, tmp_path):
    path = tmp_path / "weights.tar"
    _msceleb_checkpoint(path, create_backbone("resnet18", 7))
    result = cli("run", "--method", "standard", "--epochs", "1", "--pretrained", str(path),
                 "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert result.code == 0, result.err
    stored = read_result(run_dirs(tmp_path / "runs")[0])
    assert stored["pretrained"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stored["initialisation"] == "pretrained file"
