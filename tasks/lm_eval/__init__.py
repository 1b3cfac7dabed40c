"""Zero-shot minimal-pair suites scored through lm-eval: the suites (``suites.py``), their YAML
templates, the adapter that exposes a trained ``lm`` model as an ``lm_eval`` LM (``adapter.py``)
and the WikiText-style tokenizer both use (``tokenizer.py``)."""
