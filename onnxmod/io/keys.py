"""The ``onnxmod.*`` metadata keys, named once: every file onnxmod writes or reads spells its
``metadata_props`` keys with these constants (the values are the file format: never rename one).

Writers: ``modularize.module_metadata`` (a *module*), ``encdec`` (a translator module's extras),
``compose.stitch`` (a *composition*), ``fuse`` (a *fused* composition); the training scripts under
``tools/`` write a *model*'s (``CLASS_NAMES``, ``VOCAB_SHA256``, ``CTC_BLANK``, ...; also
``onnxmod.task`` and ``onnxmod.languages``, which onnxmod never reads, so they are not named here).
``io.metadata.check_metadata`` checks them when a file is read. ``tests/io/test_keys.py`` checks that
no other module of onnxmod spells a key as a string literal.
"""
from __future__ import annotations

PREFIX = "onnxmod."  # what every key below starts with (a file carrying one was written by onnxmod)

# ---- what the file is -------------------------------------------------------------------------
KIND = PREFIX + "kind"  # "model" | "module" | "composition" | "fused" (io.metadata.KINDS); absent: a model
VERSION = PREFIX + "version"  # onnxmod's __version__ that wrote the module / composition / fused file
SHAPE = PREFIX + "shape"  # the model's input/output shape ("M:1", "M:N", "1:M", "enc-dec", ...); all writers

# ---- a module's identity (modularize; copied per module into a composition's MODULES) -----------
CLASS_INDEX = PREFIX + "class_index"  # the class the module is for, decimal (modularize)
CLASS_NAME = PREFIX + "class_name"  # that class's name (modularize)
MODE = PREFIX + "mode"  # "rolled" | "unrolled": how units were selected (modularize)
SOURCE_SHA256 = PREFIX + "source_sha256"  # sha256 of the model decomposed (modularize, fuse)
CONCERN = PREFIX + "concern"  # JSON: per layer the units kept, positives/negatives, vocabulary/embedding (modularize)
MAX_STEPS = PREFIX + "max_steps"  # longest sequence of an unrolled module / composition, decimal (modularize, stitch)
UNROLLED_SEMANTICS = PREFIX + "unrolled_semantics"  # an unrolled module's --unrolled choice (modularize)

# ---- what the input and output mean -------------------------------------------------------------
INPUT_SIGNATURE = PREFIX + "input_signature"  # JSON name/dtype/shape per graph input (modularize, stitch, fuse)
VOCAB_SHA256 = PREFIX + "vocab_sha256"  # sha256 of the input vocabulary (the model's, from tools/; then every writer)
OUTPUT_VOCAB_SHA256 = PREFIX + "output_vocab_sha256"  # sha256 of a CTC charset / target vocab (modularize, encdec)
CTC_BLANK = PREFIX + "ctc_blank"  # a CTC head's blank class index, decimal (a model's from tools/; modularize, stitch)
CLASS_NAMES = PREFIX + "class_names"  # JSON list of the model's class names (a model's, written by tools/)

# ---- encoder-decoder (translator) models ------------------------------------------------------
LANG_TOKEN = PREFIX + "lang_token"  # a translator module's target-language token, decimal (encdec)
SRC_VOCAB_SHA256 = PREFIX + "src_vocab_sha256"  # sha256 of a translator model's source vocabulary (tools/)
TGT_VOCAB_SHA256 = PREFIX + "tgt_vocab_sha256"  # sha256 of a translator model's target vocabulary (tools/)

# ---- compositions and fused compositions --------------------------------------------------------
CLASSES = PREFIX + "classes"  # JSON list of the classes composed, one identity each (stitch, fuse)
MODULES = PREFIX + "modules"  # JSON list of each composed module's own metadata map (stitch)
MODULE_OUTPUTS = PREFIX + "module_outputs"  # JSON list of each module's output names in the graph (stitch)
KEPT_UNITS = PREFIX + "kept_units"  # JSON per class: units kept per recurrent layer (fuse)
