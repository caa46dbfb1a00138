"""The instruments: PVQ-21, BFI-10, answer scales, attention checks, consent texts.

Definitions live in YAML files beside this module and are validated on load; any error
names the file and the field. Scoring keys (which item measures which value) come from the
same files, so the app, the simulator and the scoring cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

# Dimension names exactly as in the Value Portrait release.
PVQ_VALUES: tuple[str, ...] = (  # in the order of Schwartz's circle (DESIGN.md)
    "Universalism", "Benevolence", "Tradition", "Conformity", "Security",
    "Power", "Achievement", "Hedonism", "Stimulation", "Self_Direction",
)
HIGHER_ORDER: dict[str, tuple[str, ...]] = {
    "Self_Transcendence": ("Universalism", "Benevolence"),
    "Conservation": ("Tradition", "Conformity", "Security"),
    "Self_Enhancement": ("Power", "Achievement"),
    "Openness_to_Change": ("Stimulation", "Self_Direction"),
}
BFI_TRAITS: tuple[str, ...] = ("Extraversion", "Agreeableness", "Conscientiousness", "Neuroticism", "Openness")
FAMILIES: dict[str, tuple[str, ...]] = {
    "pvq": PVQ_VALUES,
    "higher_pvq": tuple(HIGHER_ORDER),
    "bfi": BFI_TRAITS,
}
#: dimension -> family
FAMILY_OF: dict[str, str] = {d: fam for fam, dims in FAMILIES.items() for d in dims}

#: How each dimension is written for readers (Schwartz's spelling: "Self-Direction",
#: "Openness to Change"). Data files keep the release's names; every label drawn in a report,
#: figure or page goes through :func:`dimension_label`, so a value has one spelling everywhere.
DIMENSION_LABELS: dict[str, str] = {
    **{d: d for dims in FAMILIES.values() for d in dims},
    "Self_Direction": "Self-Direction",
    "Self_Transcendence": "Self-Transcendence",
    "Self_Enhancement": "Self-Enhancement",
    "Openness_to_Change": "Openness to Change",
}
#: family code -> words.
FAMILY_LABELS: dict[str, str] = {"pvq": "PVQ values", "higher_pvq": "higher-order values", "bfi": "Big Five traits"}


def dimension_label(name) -> str:
    """A dimension's name for readers: ``Self_Direction`` -> ``Self-Direction``.

    Names that are not dimensions come back with underscores as spaces.

    >>> dimension_label("Openness_to_Change"), dimension_label("Power"), dimension_label("age_band")
    ('Openness to Change', 'Power', 'age band')
    """
    text = str(name)
    return DIMENSION_LABELS.get(text, text.replace("_", " "))



def __getattr__(name: str):
    """The models and loaders (``load_pvq21``, ``Scale``...), from :mod:`instruments.definitions` on first use.

    Kept apart so that importing the labels above does not import pydantic: the report's
    processes need only them.
    """
    if not name.startswith("__") and name != "definitions":
        import importlib

        definitions = importlib.import_module("instruments.definitions")
        if hasattr(definitions, name):
            return getattr(definitions, name)
    raise AttributeError(f"module 'instruments' has no attribute {name!r}")
