"""Write a Triton model repository for our exported text models.

Layout for each model (name taken from the ONNX file's metadata)::

    <root>/<name>/config.pbtxt          production: onnxruntime backend, CPU instances
    <root>/<name>/configs/gpu.pbtxt     production on a GPU node: onnxruntime, KIND_GPU
    <root>/<name>/configs/local.pbtxt   dev/CI: Python backend running the same model.onnx
    <root>/<name>/labels.txt            one label per line, in output order (classifiers only:
                                        an embedder has no labels, so no file and no
                                        label_filename)
    <root>/<name>/1/model.onnx
    <root>/<name>/1/model.py            the Python-backend model (models/triton/model.py)

tritonserver picks ``configs/<x>.pbtxt`` instead of ``config.pbtxt`` when started with
``--model-config-name=<x>``. Triton's own version directory is always ``1``; our model version
travels as the config parameter ``citystream_model_version`` so clients can check it.

The configs are built as ``ModelConfig`` protobufs (Triton's own schema, shipped with
tritonclient) and printed as text, so a misspelt field fails here rather than in the server.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from models.export import ModelInfo, read_model_info

TRITON_DIR = Path(__file__).resolve().parent / "triton"
PYTHON_MODEL_TEMPLATE = TRITON_DIR / "model.py"

VERSION_PARAMETER = "citystream_model_version"
THREADS_PARAMETER = "intra_op_num_threads"
LABELS_FILE = "labels.txt"
TRITON_VERSION_DIR = "1"
LOCAL_CONFIG = "local"
GPU_CONFIG = "gpu"

_DTYPES = {"INT64": mc.TYPE_INT64, "FP32": mc.TYPE_FP32}


@dataclass(frozen=True)
class ServingOptions:
    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (16, 32, 64)
    # A couple of ms: enough for the dynamic batcher to merge concurrent micro-batches,
    # small against our per-event latency budget.
    max_queue_delay_us: int = 2000
    cpu_instances: int = 1
    gpu_instances: int = 1
    # Threads of the onnxruntime session inside the local Python backend.
    local_intra_op_threads: int = 1
    # (input name, dims) for inputs with a variable dimension (-1, an image's height or
    # width): the warm-up request at load needs concrete ones.
    warmup_dims: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        bad = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred batch sizes {bad} outside 1..{self.max_batch_size}")
        if self.cpu_instances < 1 or self.gpu_instances < 1:
            raise ValueError("instance counts must be >= 1")


def build_config(info: ModelInfo, kind: str, options: ServingOptions) -> mc.ModelConfig:
    """The ModelConfig of one model: kind is "cpu" (config.pbtxt), "gpu" or "local"."""
    if kind not in ("cpu", "gpu", LOCAL_CONFIG):
        raise ValueError(f"unknown config kind {kind!r}: expected cpu, gpu or local")
    config = mc.ModelConfig(name=info.name, max_batch_size=options.max_batch_size)
    if kind == LOCAL_CONFIG:
        config.backend = "python"
        config.parameters[THREADS_PARAMETER].string_value = str(options.local_intra_op_threads)
    else:
        config.backend = "onnxruntime"
        config.default_model_filename = "model.onnx"
    config.parameters[VERSION_PARAMETER].string_value = info.version
    for spec in info.inputs:
        config.input.add(name=spec.name, data_type=_DTYPES[spec.dtype], dims=list(spec.dims))
    for spec in info.outputs:
        output = config.output.add(
            name=spec.name, data_type=_DTYPES[spec.dtype], dims=list(spec.dims)
        )
        if info.labels:
            # Labels name classes (classification extension); an embedding has none.
            output.label_filename = LABELS_FILE
    config.dynamic_batching.preferred_batch_size.extend(options.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    if kind == "gpu":
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=options.gpu_instances)
    else:
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=options.cpu_instances)
    # One all-zero request at load: the first real request does not pay session warm-up.
    warmup = config.model_warmup.add(name="zeros", batch_size=1)
    sample_dims = dict(options.warmup_dims)
    for spec in info.inputs:
        dims = sample_dims.get(spec.name, spec.dims)
        if any(d < 1 for d in dims):
            raise ValueError(
                f"{info.name}: input {spec.name!r} has variable dims {list(spec.dims)}; "
                "give ServingOptions.warmup_dims a concrete shape for its warm-up"
            )
        warmup.inputs[spec.name].data_type = _DTYPES[spec.dtype]
        warmup.inputs[spec.name].dims.extend(dims)
        warmup.inputs[spec.name].zero_data = True
    return config


def render_config(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_config(text: str) -> mc.ModelConfig:
    """Parse a config.pbtxt (Triton's schema); raises text_format.ParseError when invalid."""
    return text_format.Parse(text, mc.ModelConfig())


def write_model_repository(
    root: Path, models: Sequence[Path], options: ServingOptions | None = None
) -> list[Path]:
    """Lay out a Triton model repository at ``root`` for ``models`` (exported .onnx files).

    Returns the model directories. An existing model directory of the same name is replaced,
    so a repository can be rewritten with new versions in place.
    """
    options = options or ServingOptions()
    infos = [read_model_info(Path(p)) for p in models]
    names = [info.name for info in infos]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two model files carry the same model name: {duplicates}")
    if not PYTHON_MODEL_TEMPLATE.is_file():
        raise FileNotFoundError(f"Python-backend template missing: {PYTHON_MODEL_TEMPLATE}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for path, info in zip(models, infos, strict=True):
        model_dir = root / info.name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        version_dir = model_dir / TRITON_VERSION_DIR
        (model_dir / "configs").mkdir(parents=True)
        version_dir.mkdir()
        shutil.copyfile(path, version_dir / "model.onnx")
        shutil.copyfile(PYTHON_MODEL_TEMPLATE, version_dir / "model.py")
        if info.labels:
            (model_dir / LABELS_FILE).write_text("\n".join(info.labels) + "\n", encoding="utf-8")
        (model_dir / "config.pbtxt").write_text(render_config(build_config(info, "cpu", options)))
        for kind in (GPU_CONFIG, LOCAL_CONFIG):
            (model_dir / "configs" / f"{kind}.pbtxt").write_text(
                render_config(build_config(info, kind, options))
            )
        written.append(model_dir)
    return written
