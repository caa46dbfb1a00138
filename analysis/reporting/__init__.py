"""Building blocks of the validation report (`vp report`): inputs, sections, figures, HTML."""
