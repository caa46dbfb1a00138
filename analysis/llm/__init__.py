"""LLM scoring: items to prompts, answers to profiles (the modules of this package).

Only the constants shared with the report live here, so that reading them imports nothing.
"""

#: ICC(C,k) is Cronbach's alpha over the prompt variants; below the usual .70 for research
#: use, a model's averaged answers are too inconsistent for its profile to mean much.
LOW_CONSISTENCY = 0.70
