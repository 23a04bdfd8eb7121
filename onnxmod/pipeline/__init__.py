"""The decomposition pipeline, in the order ``decompose`` runs it: ``load`` (options, the model,
its data), ``holdout`` (the validation split), ``identify`` (tracing and concern scores), ``build``
(modules and their composition: at the removal cap, guarded or size-searched — ``onnxmod.search``
— and fused), ``describe`` (the report), ``write`` (the output directory, atomically);
``translator`` does the same for encoder-decoder models. ``onnxmod.api`` calls ``decompose``;
nothing here calls ``onnxmod.api``."""
from .decomposition import decompose
from .identify import identify_concerns
from .load import MODES, MONITORS, Options, load_dataset_for, resolve_mode, vocab_fingerprint
from .write import MAX_NAME, module_file_names

__all__ = ["MAX_NAME", "MODES", "MONITORS", "Options", "decompose", "identify_concerns", "load_dataset_for",
           "module_file_names", "resolve_mode", "vocab_fingerprint"]
