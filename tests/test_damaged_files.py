"""Damaged runtime files given to the CLI: one line, exit 2, nothing written."""
from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.mark.parametrize("damage, words", [("truncate", "not a readable ONNX model"), ("text", "not a readable ONNX model"),
                                           ("external", "external data file"), ("escape", "outside the model's folder")])
def test_bench_refuses_a_damaged_onnx_in_one_line(tmp_path, damage, words):
    import onnx
    from click.testing import CliRunner

    from edgeprune.cli import main

    model = nn.Linear(64, 64)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(1, 64),), str(path), dynamo=False)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "text":
        path.write_text("this is not a model\n")
    else:
        proto = onnx.load(str(path))
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.data",
                  size_threshold=0)
        if damage == "external":
            (tmp_path / "w.data").unlink()
        else:
            proto = onnx.load(str(path), load_external_data=False)
            for t in proto.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = "../outside.data"
            onnx.save(proto, str(path))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(main, ["bench", str(path), "-b", "onnxruntime"])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_bench_refuses_an_openvino_xml_without_its_bin(tmp_path):
    from click.testing import CliRunner

    from edgeprune.cli import main

    (tmp_path / "m.xml").write_text("<net/>")
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "m.xml"), "-b", "openvino"])
    assert result.exit_code == 2 and "m.bin is missing" in result.output and "Traceback" not in result.output
