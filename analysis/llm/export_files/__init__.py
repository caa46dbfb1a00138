"""Files `vp export-bank` copies into its exports, unchanged.

They run where valueportrait may not be installed (an Inspect or lm-evaluation-harness
setup), so they use the standard library only, besides the framework they serve. The
exporter copies ``analysis/llm/parse.py`` beside them as ``vp_parse.py``: the answer
parser of every route is the same file.
"""
