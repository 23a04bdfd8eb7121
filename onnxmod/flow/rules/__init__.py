"""The op table's rules, one module per category (``onnxmod.flow.optable`` collects them)."""
