"""The GPU-only launch paths up to the GPU: each documented accelerate config read by accelerate's own
launcher code into the environment it hands our processes, and what a CPU user gets from it."""

from pathlib import Path

import pytest

from sdporec.errors import ConfigError
from sdporec.training.distributed import deepspeed_settings, make_accelerator, sharded_launch

CONFIGS = Path(__file__).parent.parent / "examples" / "accelerate"


def launch_env(name: str, monkeypatch) -> dict[str, str]:
    """The environment `accelerate launch --config_file examples/accelerate/<name> -m sdporec sft` sets for
    each process: accelerate's own `launch_command`, with the step that would start the processes (torchrun,
    or deepspeed, which is not installed here) replaced by keeping the environment it prepared."""
    import accelerate.commands.launch as launch
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    got = {}
    monkeypatch.setattr(launch, "multi_gpu_launcher", lambda args: got.update(prepare_multi_gpu_env(args)))
    monkeypatch.setattr(launch, "deepspeed_launcher", lambda args: got.update(prepare_deepspeed_cmd_env(args)[1]))
    launch.launch_command(
        launch.launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "-m", "sdporec", "sft"])
    )
    return {k: v for k, v in got.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


def test_the_fsdp_config_parses_to_fsdp2_wrapping_llama_layers(monkeypatch):
    env = launch_env("fsdp.yaml", monkeypatch)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "LlamaDecoderLayer"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_the_fsdp_settings_build_accelerates_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin

    for k, v in launch_env("fsdp.yaml", monkeypatch).items():
        monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()  # reads the environment, as the Accelerator does
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT") and plugin.reshard_after_forward is True
    assert plugin.cpu_ram_efficient_loading is True


def test_the_deepspeed_config_parses_to_zero2(monkeypatch):
    env = launch_env("deepspeed-zero2.yaml", monkeypatch)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"
    assert env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] == "none"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "false" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_the_ddp_config_parses_to_two_processes():
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / "ddp.yaml"))
    assert str(cfg.distributed_type).endswith("MULTI_GPU") and cfg.num_processes == 2 and cfg.use_cpu is False
    assert sharded_launch() is None


@pytest.mark.parametrize("name,kind", [("fsdp.yaml", "FSDP"), ("deepspeed-zero2.yaml", "DeepSpeed")])
@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_a_sharded_config_on_cpu_is_one_line(monkeypatch, name, kind, device):
    for k, v in launch_env(name, monkeypatch).items():
        monkeypatch.setenv(k, v)
    assert sharded_launch() == kind
    monkeypatch.setattr("torch.cuda.is_available", lambda: device == "cpu")  # with --device cpu: a GPU is there
    with pytest.raises(ConfigError) as e:
        make_accelerator(device, "no")
    where = "--device cpu was given" if device == "cpu" else "no CUDA GPU is available here"
    assert str(e.value) == (
        f"setting 'device': the accelerate config asks for {kind}, which shards the model over "
        f"CUDA GPUs, but {where}; on CPU launch with a DDP config or none"
    )


def test_deepspeed_gets_the_runs_batch_accumulation_and_clipping():
    assert deepspeed_settings(8, 4, 0.5) == {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 4,
        "gradient_clipping": 0.5,
    }
