"""Triton Python-backend model: runs this model version's ``model.onnx`` with onnxruntime.

Used where the tritonserver at hand has only the Python backend (the nvidia-pytriton build
on developer machines and CI); production uses the onnxruntime backend on the same file.
This file runs inside Triton's stub interpreter, not in our package: it may import only
numpy, onnxruntime and ``triton_python_backend_utils``. The stub starts its interpreter
isolated from the environment, so PYTHONPATH (which infra/triton.py points at the server
env's site-packages) is applied here by hand, before numpy is imported.

All requests of one dynamic batch are concatenated into one onnxruntime call; a batch that
fails is re-run request by request, so one bad request fails alone.
"""

from __future__ import annotations

import json
import os
import site
import sys
from pathlib import Path
from typing import Any

for _entry in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    if _entry and _entry not in sys.path:
        site.addsitedir(_entry)  # also runs the .pth files of that site-packages
        sys.path.remove(_entry)
        sys.path.insert(0, _entry)  # ahead of the base interpreter's site-packages

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from onnxruntime.capi.onnxruntime_pybind11_state import (  # noqa: E402
    Fail,
    InvalidArgument,
    RuntimeException,
)

_ORT_ERRORS = (Fail, InvalidArgument, RuntimeException)
VERSION_PARAMETER = "citystream_model_version"
THREADS_PARAMETER = "intra_op_num_threads"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        model_file = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get(THREADS_PARAMETER, "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.output_dtypes = [
            pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]
        ]
        session_inputs = sorted(i.name for i in self.session.get_inputs())
        session_outputs = sorted(o.name for o in self.session.get_outputs())
        if session_inputs != sorted(self.input_names) or session_outputs != sorted(
            self.output_names
        ):
            raise ValueError(
                f"{model_file}: inputs {session_inputs} / outputs {session_outputs} do not match "
                f"config.pbtxt inputs {self.input_names} / outputs {self.output_names}"
            )
        # Refuse to serve a file whose version differs from the one the config announces:
        # clients check the config parameter, so both must agree.
        file_version = self.session.get_modelmeta().custom_metadata_map.get("citystream.version")
        config_version = params.get(VERSION_PARAMETER)
        if config_version is not None and file_version != config_version:
            raise ValueError(
                f"{model_file}: file version {file_version!r} != config parameter "
                f"{VERSION_PARAMETER} {config_version!r}"
            )

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = self.session.run(self.output_names, feeds)
        return [np.asarray(o, dtype=d) for o, d in zip(outputs, self.output_dtypes, strict=True)]

    def _response(self, outputs: list[np.ndarray]) -> Any:
        tensors = [
            pb_utils.Tensor(name, array)
            for name, array in zip(self.output_names, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        per_request = [
            {
                name: pb_utils.get_input_tensor_by_name(r, name).as_numpy()
                for name in self.input_names
            }
            for r in requests
        ]
        sizes = [feeds[self.input_names[0]].shape[0] for feeds in per_request]
        batch = {
            name: np.concatenate([feeds[name] for feeds in per_request])
            for name in self.input_names
        }
        try:
            outputs = self._run(batch)
        except _ORT_ERRORS:
            return [self._run_one(feeds) for feeds in per_request]
        responses = []
        start = 0
        for size in sizes:
            responses.append(self._response([o[start : start + size] for o in outputs]))
            start += size
        return responses

    def _run_one(self, feeds: dict[str, np.ndarray]) -> Any:
        try:
            return self._response(self._run(feeds))
        except _ORT_ERRORS as exc:
            # Reported to the client as this request's error, not swallowed.
            # INVALID_ARG: the request is at fault (e.g. a token id outside the vocabulary),
            # so clients do not retry it or fail over.
            error = pb_utils.TritonError(f"onnxruntime: {exc}", pb_utils.TritonError.INVALID_ARG)
            return pb_utils.InferenceResponse(output_tensors=[], error=error)

    def finalize(self) -> None:
        self.session = None
