"""Rebuild the real exporters' graphs the rewrite tests run on (mechanics: random weights).

    /work/venvs/<tf venv>/bin/python tests/rewrite/data/build_exports.py keras   # tensorflow-cpu, keras 3, tf2onnx
    python tests/rewrite/data/build_exports.py torch             # torch 2.13 default exporter + onnxscript

Each model: float input ``x`` [batch, time, 5], hidden 6, 4 classes, opset 17, seeded. Written to
tests/rewrite/data/{tf2onnx,torch_dynamo}/<name>.onnx. Neither framework is needed by the tests.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
F, H, C, T = 5, 6, 4, 7


def keras_models():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    import tf2onnx
    from keras import layers

    def dense(**kw):
        return layers.Dense(C, bias_initializer="random_normal", **kw)

    specs = {
        "lstm_last": lambda x: dense(activation="softmax")(layers.LSTM(H)(x)),
        "lstm_dense": lambda x: dense()(layers.LSTM(H, return_sequences=True)(x)),
        "bilstm_last": lambda x: dense()(layers.Bidirectional(layers.LSTM(H))(x)),
        "bilstm_seq": lambda x: dense()(layers.Bidirectional(layers.LSTM(H, return_sequences=True))(x)),
        "bilstm_lstm_seq": lambda x: dense()(layers.LSTM(H, return_sequences=True)(
            layers.Bidirectional(layers.LSTM(H, return_sequences=True))(x))),
        "lstm_back_last": lambda x: dense()(layers.LSTM(H, go_backwards=True)(x)),
        "lstm_back_seq": lambda x: dense()(layers.LSTM(H, go_backwards=True, return_sequences=True)(x)),
        "lstm_back_lstm": lambda x: dense()(layers.LSTM(H)(
            layers.LSTM(H, return_sequences=True, go_backwards=True)(x))),
        "td_lstm": lambda x: layers.TimeDistributed(dense())(layers.LSTM(H, return_sequences=True)(x)),
        "td_bilstm_softmax": lambda x: layers.TimeDistributed(dense(activation="softmax"))(
            layers.Bidirectional(layers.LSTM(H, return_sequences=True))(x)),
    }
    out = HERE / "tf2onnx"
    out.mkdir(exist_ok=True)
    for name, body in specs.items():
        keras.utils.set_random_seed(0)
        time = T if name.startswith("td_") else None  # TimeDistributed unrolls only a static length
        x = keras.Input((time, F), name="x")
        model = keras.Model(x, body(x))
        spec = (tf.TensorSpec((None, time, F), tf.float32, name="x"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(out / f"{name}.onnx"))
        print("wrote", out / f"{name}.onnx")


def torch_models():
    warnings.filterwarnings("ignore")
    import torch
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self, cell, layers, bi, many):
            super().__init__()
            self.rnn = getattr(nn, cell)(F, H, num_layers=layers, bidirectional=bi, batch_first=True)
            self.out = nn.Linear(H * (2 if bi else 1), C)
            self.many = many

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.out(y if self.many else y[:, -1])

    specs = {"lstm1": ("LSTM", 1, False, False), "lstm2_bi": ("LSTM", 2, True, False),
             "gru1_bi": ("GRU", 1, True, False), "gru2": ("GRU", 2, False, False),
             "lstm_bi_many": ("LSTM", 1, True, True), "gru_many": ("GRU", 1, False, True)}
    out = HERE / "torch_dynamo"
    out.mkdir(exist_ok=True)
    for name, cfg in specs.items():
        torch.manual_seed(0)
        model = Classifier(*cfg).eval()
        auto = torch.export.Dim.AUTO
        torch.onnx.export(model, (torch.randn(2, T, F),), str(out / f"{name}.onnx"), dynamo=True, input_names=["x"],
                          output_names=["logits"], dynamic_shapes=({0: auto, 1: auto},), external_data=False)
        print("wrote", out / f"{name}.onnx")


if __name__ == "__main__":
    {"keras": keras_models, "torch": torch_models}[sys.argv[1]]()
