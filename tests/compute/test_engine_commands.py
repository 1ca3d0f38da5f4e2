"""Engine registry and the command lines its adapters build (no engine is started here)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from compute.engines import ENGINES, EngineArgError, EngineSpec, UnknownEngineError, get_engine
from compute.engines.base import EngineAdapter, validate_args


def spec(**extra: Any) -> EngineSpec:
    return EngineSpec(
        model_dir="/models/qwen-7b",
        served_model_name="acme/qwen-7b",
        host="10.1.2.3",
        port=8123,
        extra_args=extra,
        python="/opt/venv/bin/python",
        api_key="replica-secret",
    )


def flag_value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, argv
    return argv[argv.index(flag) + 1]


def test_registry_entries_are_lazy_module_attr_strings_that_resolve_to_adapters() -> None:
    assert set(ENGINES) == {"transformers", "vllm"}
    for name, target in ENGINES.items():
        module, _, attr = target.partition(":")
        assert module.startswith("compute.engines.") and attr
        adapter = get_engine(name)
        assert isinstance(adapter, EngineAdapter)
        assert adapter.name == name


def test_unknown_engine_name_suggests_the_closest_one() -> None:
    with pytest.raises(UnknownEngineError, match=r"Did you mean 'vllm'\?"):
        get_engine("vlm")
    with pytest.raises(UnknownEngineError, match="Known engines: transformers, vllm") as err:
        get_engine("llama.cpp")
    assert "Did you mean" not in str(err.value)


def test_building_a_vllm_command_does_not_import_vllm() -> None:
    get_engine("vllm").build_command(spec())
    assert "vllm" not in sys.modules


def test_vllm_command_serves_the_model_dir_with_name_host_port() -> None:
    argv = get_engine("vllm").build_command(spec())
    assert argv[0].endswith("vllm")
    assert argv[1:3] == ["serve", "/models/qwen-7b"]
    assert flag_value(argv, "--served-model-name") == "acme/qwen-7b"
    assert flag_value(argv, "--host") == "10.1.2.3"
    assert flag_value(argv, "--port") == "8123"
    assert flag_value(argv, "--tensor-parallel-size") == "1"
    assert "--enable-lora" not in argv
    # Removed from vLLM 0.12 (request logging is off by default): never emitted.
    assert "--disable-log-requests" not in argv


def test_vllm_tensor_parallel_size_follows_the_gpus_given() -> None:
    engine = get_engine("vllm")
    by_ids = spec(gpu_ids=[2, 3, 5, 7])
    assert flag_value(engine.build_command(by_ids), "--tensor-parallel-size") == "4"
    assert engine.build_env(by_ids)["CUDA_VISIBLE_DEVICES"] == "2,3,5,7"
    assert flag_value(engine.build_command(spec(gpu_count=2)), "--tensor-parallel-size") == "2"
    explicit = spec(tensor_parallel_size=8)
    assert flag_value(engine.build_command(explicit), "--tensor-parallel-size") == "8"
    with pytest.raises(EngineArgError, match="tensor_parallel_size must equal"):
        engine.build_command(spec(tensor_parallel_size=2, gpu_ids=[0]))


def test_vllm_command_carries_model_options() -> None:
    argv = get_engine("vllm").build_command(
        spec(dtype="bfloat16", max_model_len=8192, gpu_memory_utilization=0.85, enforce_eager=True,
             trust_remote_code=False, seed=None)
    )  # fmt: skip
    assert flag_value(argv, "--dtype") == "bfloat16"
    assert flag_value(argv, "--max-model-len") == "8192"
    assert flag_value(argv, "--gpu-memory-utilization") == "0.85"
    assert "--enforce-eager" in argv
    assert "--trust-remote-code" not in argv  # a false switch emits nothing
    assert "--seed" not in argv  # None means unset


def test_vllm_lora_flags_appear_only_when_lora_is_enabled() -> None:
    engine = get_engine("vllm")
    lora = spec(
        enable_lora=True, max_loras=8, max_lora_rank=32, lora_modules={"sql": "adapters/sql"}
    )
    argv = engine.build_command(lora)
    assert "--enable-lora" in argv
    assert flag_value(argv, "--max-loras") == "8"
    assert flag_value(argv, "--max-lora-rank") == "32"
    assert flag_value(argv, "--lora-modules") == "sql=/models/qwen-7b/adapters/sql"
    assert engine.build_env(lora)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"

    defaults = engine.build_command(spec(enable_lora=True))
    assert flag_value(defaults, "--max-loras") == "4"
    assert flag_value(defaults, "--max-lora-rank") == "64"

    off = spec(enable_lora=False)
    assert not any(
        a.startswith("--max-lora") or a == "--enable-lora" for a in engine.build_command(off)
    )
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in engine.build_env(off)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_lora_rank": 48, "enable_lora": True}, "max_lora_rank=48"),
        ({"max_loras": 2}, "need enable_lora=True"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_model_len": "4096"}, "max_model_len"),
        ({"max_model_len": True}, "max_model_len"),
        ({"dtype": "fp7"}, "dtype"),
        ({"max_modle_len": 4096}, "Did you mean 'max_model_len'"),
        ({"gpu_ids": []}, "gpu_ids is empty"),
    ],
)
def test_invalid_vllm_options_are_rejected_with_the_option_named(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(EngineArgError, match=message):
        get_engine("vllm").build_command(spec(**extra))


def test_transformers_command_runs_the_cpu_server_module_with_the_spec_python() -> None:
    argv = get_engine("transformers").build_command(
        spec(max_model_len=2048, max_batch_size=4, dtype="half", num_threads=2)
    )
    assert argv[:3] == ["/opt/venv/bin/python", "-m", "compute.engines.transformers_server"]
    assert flag_value(argv, "--model") == "/models/qwen-7b"
    assert flag_value(argv, "--served-model-name") == "acme/qwen-7b"
    assert flag_value(argv, "--host") == "10.1.2.3"
    assert flag_value(argv, "--port") == "8123"
    assert flag_value(argv, "--max-model-len") == "2048"
    assert flag_value(argv, "--max-batch-size") == "4"
    assert flag_value(argv, "--dtype") == "float16"  # vLLM's alias mapped
    assert flag_value(argv, "--num-threads") == "2"
    assert get_engine("transformers").build_env(spec())["HF_HUB_OFFLINE"] == "1"


def test_transformers_command_parses_with_the_servers_own_argument_parser() -> None:
    from compute.engines.transformers.server import parse_args

    argv = get_engine("transformers").build_command(spec(max_model_len=128, device="cpu"))
    args = parse_args(argv[3:])
    assert (args.model, args.served_model_name, args.port, args.max_model_len) == (
        "/models/qwen-7b",
        "acme/qwen-7b",
        8123,
        128,
    )


def test_transformers_engine_refuses_gpu_only_options_but_accepts_their_off_values() -> None:
    engine = get_engine("transformers")
    engine.build_command(spec(tensor_parallel_size=1, gpu_ids=[], gpu_count=0))
    with pytest.raises(EngineArgError, match="does not support tensor_parallel_size"):
        engine.build_command(spec(tensor_parallel_size=2))
    with pytest.raises(EngineArgError, match="Did you mean 'max_batch_size'"):
        engine.build_command(spec(max_batch=4))


def test_transformers_lora_is_on_by_default_and_sized_like_vllm() -> None:
    from compute.engines.transformers.server import parse_args

    engine = get_engine("transformers")
    default = parse_args(engine.build_command(spec())[3:])
    assert (default.max_loras, default.max_lora_rank) == (8, 64)

    sized = engine.build_command(spec(enable_lora=True, max_loras=3, max_lora_rank=16))
    assert flag_value(sized, "--max-loras") == "3"
    assert flag_value(sized, "--max-lora-rank") == "16"
    assert parse_args(sized[3:]).max_loras == 3

    off = engine.build_command(spec(enable_lora=False))
    assert parse_args(off[3:]).max_loras == 0
    with pytest.raises(EngineArgError, match="max_loras need enable_lora=True"):
        engine.build_command(spec(enable_lora=False, max_loras=2))
    with pytest.raises(EngineArgError, match="max_lora_rank=48"):
        engine.build_command(spec(max_lora_rank=48))  # not one of vLLM's ranks either


def test_lora_args_valid_for_one_engine_are_valid_for_both() -> None:
    """``engine=auto`` deployments pass the same LoRA args to whichever engine a node runs."""
    args = {"enable_lora": True, "max_loras": 6, "max_lora_rank": 32}
    for name in ENGINES:
        validate_args(get_engine(name), args)
    assert get_engine("vllm").build_env(spec(**args))["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_spec_fields_are_validated() -> None:
    with pytest.raises(EngineArgError, match="port"):
        get_engine("vllm").build_command(EngineSpec("/m", "name", "127.0.0.1", 0))
    with pytest.raises(EngineArgError, match="served_model_name"):
        get_engine("transformers").build_command(EngineSpec("/m", "", "127.0.0.1", 80))


@pytest.mark.parametrize("path", ["/etc/ssh", "../other-model", "adapters/../../x"])
def test_vllm_lora_modules_stay_inside_the_model_directory(path: str) -> None:
    with pytest.raises(EngineArgError, match="relative path inside the model version"):
        get_engine("vllm").build_command(spec(enable_lora=True, lora_modules={"a": path}))


@pytest.mark.parametrize("engine", ["vllm", "transformers"])
def test_no_engine_command_without_an_api_key(engine: str) -> None:
    keyless = EngineSpec("/m", "name", "127.0.0.1", 8000)
    with pytest.raises(EngineArgError, match="no API key"):
        get_engine(engine).build_command(keyless)


def test_the_api_key_reaches_each_engine_through_its_environment_not_argv() -> None:
    vllm = get_engine("vllm")
    assert vllm.build_env(spec())["VLLM_API_KEY"] == "replica-secret"
    assert "replica-secret" not in vllm.build_command(spec())
    cpu = get_engine("transformers")
    assert cpu.build_env(spec())["OPENMAAS_ENGINE_API_KEY"] == "replica-secret"
    assert "replica-secret" not in cpu.build_command(spec())


def test_every_engine_declares_a_schema_of_its_arguments() -> None:
    from compute.engines.base import describe_schema

    for name in ENGINES:
        schema = describe_schema(get_engine(name).schema)
        assert schema["max_model_len"]["type"] == "int"
        assert schema["max_model_len"]["minimum"] == 1
    vllm = describe_schema(get_engine("vllm").schema)
    assert vllm["trust_remote_code"]["access"] == "trusted"
    assert vllm["gpu_ids"]["access"] == "reserved"
    assert "auto" in vllm["kv_cache_dtype"]["choices"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"seed": 2**64}, "seed"),
        ({"seed": -1}, "seed"),
        ({"generation_config": "/etc"}, "generation_config"),
        ({"quantization": "magic"}, "quantization"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
    ],
)
def test_vllm_values_that_would_crash_the_engine_are_refused(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(EngineArgError, match=message):
        get_engine("vllm").build_command(spec(**extra))
