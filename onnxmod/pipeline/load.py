"""The first step of a decomposition: its options checked, the model and its data read.

``Options`` holds what ``api.decompose`` was asked (``checked`` copies the caller's
``ConcernConfig``, never changes it); ``load_model`` reads the model, ``load_labelled`` its data
(labels from the data or the model's own answers, a CTC head's charset, the classes asked for).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np

from .. import classes as _classes
from .. import ctc as _ctc
from .. import labels as _labels
from .. import module_files as _module_files
from ..concern import ConcernConfig
from ..errors import InputError, UsageError
from ..graph import Model
from ..io import Dataset, keys, load_data, token_limit

MODES = ("auto", "rolled", "unrolled")
MONITORS = ("hidden", "gates")
_log = logging.getLogger("onnxmod")


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``api.decompose`` was asked (its docstring says what each option does)."""

    mode: str = "auto"
    seed: int = 0
    config: ConcernConfig | None = None
    force: bool = False
    progress: bool | None = None
    threads: int | None = None
    monitor: str = "hidden"
    max_loss: float | None = None
    evaluate: bool = True
    labels: str = "data"
    classes: object = None
    ctc_blank: int | None = None
    modules: str = "auto"

    @property
    def guarded(self) -> bool:
        """The guard runs: no size search, and the configuration has a tolerance."""
        return self.max_loss is None and self.config.guard is not None


def checked(o: Options) -> Options:
    """``o`` with its mode and monitor checked and its configuration a validated copy of the
    caller's (default: ``ConcernConfig()``) whose sampling seed is ``o.seed``: the caller's
    configuration is never changed."""
    if o.mode not in MODES:
        raise UsageError(f"mode {o.mode!r} is not one of {', '.join(MODES)}")
    if o.monitor not in MONITORS:
        raise UsageError(f"monitor {o.monitor!r} is not one of {', '.join(MONITORS)}")
    config = o.config or ConcernConfig()
    config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, seed=o.seed))
    config.validate()
    return dataclasses.replace(o, config=config)


def check_limits(o: Options) -> None:
    """The options checked after the output directory: ``max_loss``, ``labels``, ``modules``."""
    if o.max_loss is not None and not 0 <= o.max_loss <= 100:
        raise UsageError(f"--max-loss {o.max_loss} is outside 0..100 points")
    _labels.check_source(o.labels)
    _module_files.check(o.modules)


@contextlib.contextmanager
def files_named(model_path, data_path):
    """onnxruntime's refusals (``runtime``) and a few checks do not know which files they ran on:
    name the model (and the data) in front of any InputError that names neither."""
    try:
        yield
    except InputError as exc:
        msg = str(exc)
        if not msg.startswith(tuple({str(p) for f in (model_path, data_path) for p in (f, Path(f))})):
            raise InputError(f"{model_path} (on {data_path}): {msg}") from None
        raise


def resolve_mode(mode: str, model: Model) -> str:
    """``auto``: rolled for one-output models and translators, unrolled for many-output models
    (measured: rolled mode costs many-output models far more accuracy, as the paper found), unless
    unrolled modules cannot be built for the model (an opset before 13): then rolled, with one
    warning line saying why."""
    if mode != "auto":
        return mode
    if model.one_output or model.shape == "enc-dec":
        return "rolled"
    from ..unrolled import why_not_unrolled

    why = why_not_unrolled(model)
    if why:
        warnings.warn(f"{model.source}: --mode auto uses rolled mode: {why}", stacklevel=1)
        return "rolled"
    return "unrolled"


def mb(path) -> str:
    """A file's size in MB for the log, ``?`` when it cannot be read."""
    try:
        return f"{Path(path).stat().st_size / 2**20:,.1f}"
    except OSError:
        return "?"


def load_model(model_path) -> Model:
    """The model, read and recognized, said in the log."""
    _log.info("reading %s (%s MB)", model_path, mb(model_path))
    model = Model.load(model_path)
    _log.info("model: %s, %s classes, %s, %s parameters", model.shape, f"{model.num_classes:,}",
              ", ".join(f"{op.op_type} {op.name!r} ({op.directions} x {op.hidden_size} units)"
                        for op in model.recurrent),
              f"{model.parameter_count():,}")
    return model


def _onnx_dtype(model: Model):
    return np.dtype(model.input.dtype) if model.input.dtype is not None else np.dtype(np.int64)


def load_dataset_for(model: Model, data_path, train: bool = True) -> Dataset:
    """The data set ``data_path`` read as ``model``'s input and classes ask."""
    return load_data(data_path, num_classes=model.num_classes, many_output=not model.one_output,
                     input_dtype=_onnx_dtype(model), input_shape=list(model.input.shape or []) or None,
                     max_token=token_limit(model.original), train=train)


def vocab_fingerprint(model: Model, data: Dataset | None) -> str | None:
    """The vocabulary's sha256 (the model's metadata, else the data's ``vocab``): modules of one
    vocabulary compose."""
    if model.metadata.get(keys.VOCAB_SHA256):
        return model.metadata[keys.VOCAB_SHA256]
    if data is not None and data.vocab is not None:
        return hashlib.sha256("\n".join(data.vocab).encode()).hexdigest()
    return None


def load_labelled(model: Model, model_path, data_path, o: Options) -> tuple:
    """The data of a (non-translator) decomposition: ``(data, CTC blank or None, class names,
    the class indices asked for or None)``. A CTC head's blank is set on the model
    (``model.ctc_blank``), its charset names the characters and fingerprints the output."""
    blank = model.ctc_blank = _ctc.blank_of(o.ctc_blank, model, model_path)
    data = _labels.load(model, data_path, o.labels, threads=o.threads, ctc=blank is not None)
    if blank is not None:  # a charset names the characters and fingerprints the output (compose checks it)
        data, model.output_vocab_sha256 = _ctc.named_by_charset(data, model.num_classes, blank)
    names = model.class_names(data.class_names)
    selected = _classes.select(o.classes, names, model.num_classes, model_path,
                               exclude=() if blank is None else [blank])
    return data, blank, names, selected
