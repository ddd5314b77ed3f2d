"""A minimal MLServer 1.7 runtime serving an ONNX file with onnxruntime: the MLServer contender of `bench/`.

Runs inside MLServer's own virtual environment (`bench/.venv-mlserver`), never imported by ortserve.
One InferenceSession; runs go through one worker thread (like ortserve's single CPU instance) so the event
loop keeps decoding requests while a batch runs. Decoding and encoding use MLServer's default Numpy codecs.
Settings come from model-settings.json: `parameters.uri` (the ONNX file) and
`parameters.extra.intra_op_threads`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra or {}) if self.settings.parameters else {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("intra_op_threads", 0))
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = self._session.get_outputs()[0].name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        array = NumpyRequestCodec.decode_request(payload)
        loop = asyncio.get_running_loop()
        (logits,) = await loop.run_in_executor(
            self._executor, self._session.run, [self._output_name], {self._input_name: array}
        )
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(self._output_name, logits)],
        )

    async def unload(self) -> bool:
        self._executor.shutdown(wait=False)
        return True
